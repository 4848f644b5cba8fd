//! A live policy generation: the store, the published [`IdentityClassifier`] and its
//! [`Names`], kept together so that the common change — a pod arriving or leaving
//! with a label set that already exists — costs one LPM insert instead of a new
//! generation.
//!
//! A store change enters through [`Live::update`] (the caller's next store, by
//! reference, and the keys that changed), which picks the cheapest path below that
//! applies. `Live` keeps its own copy of the store and, on the fast and incremental
//! paths, changes only the changed resources in it (an endpoint index by key finds
//! them), so a pod change costs O(changed) in the store as well as in the classifier:
//! nothing of the size of the cluster is copied or freed. Only a rebuild clones the
//! caller's store.
//!
//! # What a change costs
//! - **Endpoint added** whose *behaviour* another bound endpoint already has, with
//!   host prefixes (/32, /128) that no rule, network set or other endpoint names,
//!   each in the same *zone* as one of that endpoint's (the zone of a host: the rule
//!   CIDRs and network-set prefixes containing it): the new generation shares the
//!   trees; its addresses join the exemplar's identity and programs. The
//!   endpoint's id is the next in [`Names`]. The behaviour is everything lowering
//!   reads of an endpoint besides its addresses: kind, namespace, profiles, named
//!   ports, and the result of every selector of the store (policies' applies-to,
//!   rules' peer selectors and notSelectors) on its labels. An endpoint with a label
//!   set never seen before still takes this path when every selector sees it as it
//!   sees an existing endpoint (a new `version` label that no selector reads); the
//!   selector results are computed once per distinct label set.
//! - **Workload endpoint added with a new behaviour whose *peer class* exists**, with
//!   host prefixes no rule, network set or other endpoint names and no other
//!   endpoint prefix contains. An endpoint's behaviour splits into how rules read it as a peer and
//!   which policies apply to it. The peer class (a `PeerKey`) is: its kind, its named
//!   ports (name, protocol, number), and for every distinct rule side (positive
//!   selector, `notSelector`) of the store's policies and profiles whether the
//!   positive selector matches it and whether the `notSelector` matches it where
//!   the side can (positive selector matching or absent; for a host that a network
//!   set's prefix or a wider endpoint prefix contains, on every side: a positive
//!   selector can match the host through that prefix, as a namespaced rule's
//!   implicit namespace selector matches its namespace's network sets, and the
//!   endpoint's own `notSelector` result then takes the host out of the list).
//!   Each address list lowering
//!   makes (CIDR lists, selector lists and their intersections with CIDRs,
//!   `notSelector` lists simplified against them, named-port lists with or without a
//!   selector, negated-port regions) holds a host address or not as a function of
//!   these and of the host's zone, so two hosts with one peer class in one zone are
//!   in the same lists: each new host takes the identity of a host of that class in
//!   its zone
//!   ([`IdentityClassifier::with_host_identity`]), the trees are shared, and only
//!   the endpoint's own programs are lowered (from the memo; those not seen before
//!   get their trees as a new part). It starts its behaviour's group, so its
//!   replicas take the path above. The hosts of a class are the bound exemplars
//!   (the groups' first 16 hosts, each in its zone), and *spares*: a build lowers,
//!   beside the store's endpoints, one spare workload endpoint per namespace,
//!   profiles, named ports, families and zones of the store's workload endpoints,
//!   and one per such shape without named ports (the most common 1,024, the ones
//!   without ports that no endpoint has after the others), with only the implicit `projectcalico.org/` labels, at free
//!   addresses of those zones (outside every named prefix, in `240.0.0.0/4` and
//!   `100::/64` while they last; in a zone, counting down from the top of its
//!   innermost prefix: so pods inside a rule's `10.0.0.0/8` or `0.0.0.0/0` have
//!   spares there too); the spares' hosts are unbound again at once
//!   ([`IdentityClassifier::without_ghost_hosts`]: their addresses are classified as
//!   in a build without them, and their ids and names are dropped), but their
//!   identities stay in the trees, and their classes as ghosts that a list lowered
//!   again with the spares may name (the new-class path below). A pod of a new deployment (a new `app` value, which every
//!   `app` selector reads as "not me", and a named port `http` that rules name
//!   without a peer selector) has the peer class of its namespace's spare with its
//!   ports, though no endpoint had it. A list an incremental policy change resolved
//!   holds only the identities of bound hosts, so at the first endpoint change
//!   after one the spares whose class a changed policy reads (a rule side's
//!   selector or `notSelector` matching, a port it names on a side without a
//!   selector, a CIDR containing the spare's host) are dropped for good, and so are
//!   the identities of exemplars since removed; the other spares stay (before, every
//!   spare was dropped, and a pod of a new deployment after an unrelated policy
//!   edit got an identity of its own, re-lowering its readers). A changed policy's
//!   list that does not read a spare's class rightly lacks its identity, and one
//!   equal to a list the classifier knew keeps that list's form, which holds a
//!   spare's identity only if its addresses hold the spare's. The same holds for a
//!   policy or profile whose rules no program held at the build (it applied to no
//!   endpoint and no spare) and are first lowered later, for a pod it applies to
//!   ([`super::Memo::take_lowered`]): lowered without the spares, its lists hold a
//!   spare's identity only through bound hosts that took it. So a pod whose own
//!   programs would lower such a policy reading its class does not take a spare's
//!   identity ([`Live::first_lowering_reads`]; it gets one of its own on the path
//!   below, with those lists fresh), and after any first lowering the classes and
//!   spares it reads are dropped as after a change. On this path and the next, the
//!   lists of a policy first lowered are fresh (resolved to the identities in them
//!   now: none reads the pod), and a program the pod is bound to that the memo
//!   already had (a relabelled pod's own, say, in the last tree part and bound by
//!   no host once the old pod left) is kept when the new trees are merged into
//!   that part. No class (a peer selector reading the pod as it reads no endpoint, a
//!   port number no endpoint has for that name, a zone no endpoint of that shape is
//!   in) falls to the next paths.
//! - **Workload endpoint added with a new behaviour that no rule reads as a peer**
//!   (no rule's peer selector matches it; a rule without one neither has a
//!   `notSelector` matching it nor names a port it defines), with host prefixes no
//!   rule, network set or other endpoint names: its address is in no address list
//!   but those containing it by prefix, so it takes the identity its prefix's class
//!   has ([`IdentityClassifier::with_unlisted_host`]); its own programs are lowered
//!   from the memo and any not seen before get their trees as a new part. It starts
//!   its behaviour's group, so its replicas take the path above. (Also taken when a
//!   known behaviour's first exemplars all lie in other zones.)
//! - **Workload endpoint added with a genuinely new peer class** (rules read it, as
//!   they read no bound host and no spare in its zone), with host prefixes no rule,
//!   network set or other endpoint names or contains, in a store whose endpoint
//!   prefixes are host prefixes of one endpoint each: each host gets an identity no
//!   class had, *split* from a template ([`IdentityClassifier::with_new_host_identity`]):
//!   a build numbers identities 256 apart and keeps the ids between free, every list
//!   form holding an identity holds its free ids too, and the new identity is the
//!   next free id of the template's, so every tree built so far reads the host as it
//!   reads the template. The template is, per host ([`Live::split_plan`]), the bound
//!   host or spare of its zone and kind (from the peer index) or the prefixes
//!   containing it (the zone's own class; for an empty zone, in no list) that the
//!   fewest policies read otherwise: a policy reads the two otherwise when one of its
//!   rule sides matches one and not the other (positive selector or `notSelector`,
//!   by the peer keys' bits), or when it names a port the two define differently
//!   ([`Live::policies_reading_unlike`]; against the prefixes, every side reading
//!   the host and the named-port lists of its ports on sides without a positive
//!   selector, `port_readers`). Indexes kept with the selectors give those policies
//!   (any profile among them: the next template, or the next path). So a pod of a
//!   new `app` in a namespace whose rules read every pod (a namespaced rule's
//!   implicit namespace selector), inside the rules' `10.0.0.0/8`, splits from the
//!   namespace's spare and only the policies naming its `app` are lowered again;
//!   before templates, such a pod inside any rule CIDR was a full rebuild, and from
//!   the zone's class alone every namespace-wide rule was read otherwise. With at
//!   most [`NEW_CLASS_POLICIES`] of them, those policies are lowered
//!   again over the store with the endpoint (as an incremental policy change lowers
//!   a changed one), the programs of the endpoints they apply to (one per behaviour
//!   group) and the endpoint's own are assembled from the memo, and their trees built
//!   as a new part (or in place of the last one: *Parts*, below) with those policies'
//!   lists fresh (resolved to the identities in
//!   them now, the new one included, a split identity as its base id and the ids
//!   still free); those endpoints are rebound to the new
//!   programs. Every other program's lists hold the host exactly when they hold the
//!   template, so its trees are kept. The endpoint starts its behaviour's group and its peer class is
//!   indexed (its replicas, and later pods of that class, take the paths above).
//!   The policies are lowered again with the spares in the store (see the ghosts
//!   below), so the fresh lists hold the identities of bound hosts and kept spares;
//!   a peer class a lowered-again side or port reads leaves the index only when its
//!   identity is neither (a removed exemplar's), and a spare only when a list holds
//!   it otherwise than its identity. *Stale lists*: a rule side lowered again that reads a
//!   bound template and not the host keeps its list's addresses (the host is not in
//!   them), and that list's known form holds the host's new id with the template's,
//!   which the same list named by a kept policy needs. One list cannot take both
//!   forms, so the classifier refuses it as stale
//!   ([`dataplane::classifier::ProgramChangeRefused::StaleLists`]), and the add
//!   goes one more round (at most [`STALE_ROUNDS`]): the policies whose memo still
//!   names a stale list in its old sense ([`super::Memo::naming`]) are lowered
//!   again too (within [`NEW_CLASS_POLICIES`] in all; a profile naming one is a
//!   rebuild), the programs naming one are numbered anew
//!   ([`super::Memo::renumber_programs_naming`]: lowered again, the readers give
//!   the same rules, and the old programs' trees hold the old form), and the
//!   classifier forgets the old forms
//!   ([`IdentityClassifier::forgetting_lists`]) and resolves the lists afresh
//!   (measured: BENCHMARKS.md, "A known label set in a zone its pods are not in").
//!   On this path the policies are lowered again with the spares in the store and
//!   the peer index, as the build lowers them, and the spares' hosts are *ghosts*
//!   in the classifier ([`IdentityClassifier::without_ghost_hosts`]): a fresh list
//!   naming a spare's host, or a prefix containing it, holds the spare's identity,
//!   so the spares stay, but for those a list holds otherwise than their identity
//!   ([`dataplane::classifier::FreshLists::split_ghosts`]); and a peer class the
//!   lowered-again policies read leaves the index only when its identity is neither
//!   a live class's nor a kept spare's (a removed exemplar's: [`Live::forget_unreached_peers`]).
//!   Before, every spare whose class such a policy read was dropped: after one add
//!   of a known label set in a new zone on the held-out shape, all 269, and every
//!   later pod of a new deployment rebuilt. A spare template's address leaves such
//!   lists (it is unbound), so theirs change. (On the held-out `--seed 7` cluster
//!   at 20,000 pods with `--nets`, while a build kept at most 256 spares, half of
//!   the new-class adds refused as stale: BENCHMARKS.md, "A new peer class inside
//!   rule CIDRs".) A template with no free id left (255 splits since the
//!   build) is passed over; the compaction (a full build on its thread) starts when
//!   half of a block's ids are taken, which renews them. A class more than
//!   [`NEW_CLASS_POLICIES`] policies read otherwise than every template is a full
//!   rebuild (the programs of most endpoints would be built again; see
//!   BENCHMARKS.md, "Cluster scale"). In clusters where every rule names a port
//!   (`ports: [http]`) on a side without a selector, every pod defining it is read by
//!   every policy: a new class of such pods splits from a pod defining it, or
//!   rebuilds.
//!
//!   Pod addresses are reused: an address whose pod was removed is a new host prefix
//!   to every path here (the removal unbound it and dropped it from the owner and
//!   prefix indexes), so a pod there with the removed pod's label set, or of a peer
//!   class that exists, or of a new class, takes the path it would take anywhere
//!   else. A list the new class's readers are lowered to that is, address for
//!   address, a list lowered while the address was the removed pod's (a selector
//!   that picked only that pod, the new one the only pod its reader's selector
//!   picks) is a stale list (above): the memo still holds the old list for policies
//!   not lowered since, and the classifier knows it in the old pod's identity; those
//!   policies are lowered again and the old form forgotten (the comment in
//!   [`Live::try_add_class`]).
//!
//!   What such an add costs grows mostly with what it touches (it still walks the
//!   groups and the endpoint prefixes once, which is cheap beside the rest):
//!   lowering those policies again resolves their selectors and named ports from the behaviour groups (a [`PeerIndex`]:
//!   every group's selector bits, named ports and hosts, the new endpoint's
//!   behaviour beside them; one bit test per group instead of matching the selector
//!   against the labels of every endpoint, which the first version did and which
//!   was most of its time: 8–11 ms of 18–21 ms at 20,000 pods), and the programs of
//!   the affected groups are reassembled from the skeletons of their old programs
//!   (the memo keeps each program's skeleton; an add changes no applies-to), and the
//!   endpoint's own from a group whose applies-to selector bits and profiles are its
//!   own, instead of matching every policy's applies-to selector once more. Both have slow twins
//!   the tests run beside them (the scan of the store, [`super::relower_policies`]
//!   without the hints). What is left is mostly building the trees of the
//!   namespace's programs (BENCHMARKS.md, "Cluster scale", has the split).
//! - **Endpoint removed** whose host prefixes no rule or network set names and no
//!   other endpoint has ([`IdentityClassifier::without_host`]): same. Its id stays
//!   as an unused entry of [`Names`].
//! - **Endpoint relabelled**: removed, then added.
//! - **Policies added, modified or deleted** (and nothing else), in a store whose
//!   endpoint prefixes are host prefixes of one endpoint each: the endpoints the old
//!   or the new version of a changed policy applies to get their programs lowered
//!   again from the kept lowering memo (only the changed policies' rules are lowered;
//!   a program whose content exists keeps its id), the new programs' trees are built
//!   as a new part ([`IdentityClassifier::with_programs`]) and those endpoints'
//!   bindings pointed at them. Policy ids stay stable across changes, so every other
//!   program and tree is kept. The changed policies' address lists are lowered from
//!   the store as it is now, so they are handed to the classifier as *fresh*: each
//!   is resolved to the identities of the addresses it names, and accepted when it
//!   holds whole identities (a replica added on the fast path since the build is in
//!   its exemplar's identity, so a selector that reads it as the exemplar is read
//!   agrees); every other list comes from the memo and is one the classifier knows
//!   (the memo's lists are interned across generations, so an unchanged list is the
//!   very allocation the classifier's table holds).
//!   Refused — a rebuild — when a fresh list splits an identity (a peer selector or
//!   CIDR telling replicas apart, a CIDR no rule named), when it equals a known list
//!   whose known form no longer describes it.
//!
//!   *Parts.* Every change that builds trees (this one, a new behaviour's own
//!   programs, a new peer class) builds them with
//!   [`IdentityClassifier::with_programs_merged`]: when the last part is one a change
//!   added and at most as many of its programs are still bound (after the change's
//!   rebinding) as the change adds, that part is built again with those programs and
//!   the change's instead of a part being added (at most twice the change's trees;
//!   by the incremental compiler that built it, so only the subtrees the change
//!   touches are built again: BENCHMARKS.md, "Cluster scale"), and its programs no
//!   binding names any more are dropped from the classifier and from the memo
//!   (`Memo::drop_programs`: a later program of the same content is numbered anew). Changes that rebind the programs of the change before — pods of
//!   new peer classes in one namespace, one policy edited again and again — then keep
//!   the parts where they are instead of adding one each: before, a stream of
//!   new-peer-class adds reached 32 parts within about 25 adds, and an add in 20 to
//!   40 waited 0.17–0.43 s for the compaction (BENCHMARKS.md, "Cluster scale").
//!   Parts that do accumulate (changes to different programs; the replaced
//!   programs' trees stay until a rebuild drops them): from 8 parts on, a full build
//!   of a copy of the store runs on a thread of its own (*compaction*) while changes
//!   go on (the change that starts it copies the endpoint pointers; the policies are
//!   copied on the thread from a copy `Live` keeps equal to them, since copying
//!   1,000 policies took 7–9 ms of that change). Bringing it up to the live store re-does the changes made meanwhile (a
//!   policy key re-lowers and builds its programs again: a change's work each), so
//!   the change that finds it finished does that work on the update path only when
//!   little is left: with no key changed since, it adopts it; with at most one
//!   policy key (and 64 endpoint keys), it applies those keys with its own to the
//!   compaction (endpoint keys on the fast path, then policy keys on the
//!   incremental path, nothing else) and adopts it in place of changing the live
//!   generation. Otherwise the compaction gets a *catch-up* on a thread again: the
//!   resources under every key changed since (and, for a change of endpoints or
//!   policies only, under this change's keys, as the caller's store has them) are
//!   set in a copy of its store, endpoint keys first, one at a time through the
//!   store with the keys before it set (the endpoint path reads the endpoints in key
//!   order, with the compaction's own policies; removals first; a key whose endpoint
//!   the compaction's store already has as the live one, or lacks as the live one
//!   does — a pod added and removed since — is skipped), then policy keys together,
//!   each through [`Live::update`]'s paths (a rebuild included), while the live
//!   generation takes the change and records the keys changed from then on. Catch-ups
//!   repeat until one finishes with little left; one that fails is dropped, and so is
//!   a running one when a change rebuilds. Before, the endpoint keys went through the
//!   endpoint path all at once: a key in neither store (a pod added and removed
//!   since) made that path refuse, and so did an add of a new peer class among
//!   several changes, so nearly every catch-up of a pod churn was a full rebuild on
//!   the compaction's thread (170–230 ms CPU at 5,000 pods), no catch-up ever got
//!   close, and the parts reached 32. Only a change that finds 32 parts waits for
//!   the compaction (or, with none running, rebuilds); when it cannot bring it up on
//!   the incremental paths it catches it up there one key at a time (as on the
//!   thread) and adopts it, instead of dropping it for a new compaction that the next
//!   change would wait for again. A catch-up does the work the
//!   live generation did for the same changes (less where several hit one program),
//!   so it gains on the changes only when they leave it time: under a steady
//!   back-to-back stream of changes to different programs it does not get closer,
//!   and the change that finds 32 parts waits (BENCHMARKS.md, "Control socket"). A replaced generation is
//!   dropped on a thread of its own (about 30 ms at 10,000 policies). The endpoint
//!   fast path's indexes are refreshed at the next endpoint change.
//! - Everything else — a new label key, a namespace, tier or profile change, a
//!   network set change, an address shared by two endpoints — is a full rebuild
//!   ([`Live::set_cluster`], [`lower`] then [`IdentityClassifier::build`]), which is
//!   also what the fast path must equal: the property test below checks, after random
//!   sequences of changes, that the live generation classifies every flow as a fresh
//!   build and [`crate::eval::evaluate`] do.
//!
//! An exemplar's address is one only that endpoint has: an address two endpoints
//! share is in the lists of both, so its identity is not one behaviour's (the
//! property test found this).
//!
//! Endpoints added on the fast path are appended to the live store's
//! [`Cluster::endpoints`], and one removed has the last endpoint swapped into its
//! place, so the live store's endpoints are not in key order after fast changes
//! (until the next rebuild). `eval` and the build use the store order only to pick
//! the owner of an address several endpoints' prefixes contain; such addresses never
//! take the fast path, and a removal whose swap would move an endpoint holding one
//! shifts the endpoints after it instead (O(endpoints), only in stores where endpoint
//! prefixes overlap), so their relative order — and the owner — stays that of the
//! caller's store (the property test checks the live generation against `eval` of
//! the caller's store, not only of its own copy).
//!
//! # Where the time of a pod change goes (20,000 pods, 1,000 policies)
//! [`IdentityClassifier::with_host`] copies the LPMs' nodes and the per-class
//! identity and binding once (about 0.4 MB) and the bindings table with the new
//! binding in a spare entry (0.4 MB, one `memcpy`);
//! [`IdentityClassifier::without_host`] copies the former and shares the bindings;
//! both share the per-class prefix table in `Arc`'d chunks. The store change is an
//! index lookup, a swap-remove or a push of an `Arc`'d endpoint (shared with the
//! caller's store, so no endpoint is copied). In the daemon the rest of a change is
//! the caller's: parsing the request, the store copy and `Cluster::update` (its
//! sorted endpoint list moves one pointer per endpoint after the changed one; before
//! the endpoints were `Arc`'d it moved about 2 MB of them per change, the largest
//! single cost), the names copied for the published generation (one pointer per 256
//! endpoints and the owner LPM's nodes) and the reply. Before, `update` took the
//! whole next store by value: the caller cloned 20,000 endpoints to build it (tens
//! of milliseconds) and the replaced store was freed on a background thread whose
//! frees contended with the control thread's allocations (wall p99 of 13–28 ms for a
//! change whose own work took under 1 ms). BENCHMARKS.md, "Cluster scale" and "Pod
//! churn through the socket", has the measurements.

use std::sync::Arc;

use dataplane::classifier::{
    BuildConfig, BuildError, FreshLists, HostIdentity, IdentityClassifier, ProgramChangeRefused,
};
use dataplane::program::{Classify, EndpointId, FlowVerdicts, Nets, PolicyId, Program, ProgramId};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use ipnet::IpNet;
use thiserror::Error;

use super::{
    EndpointName, LowerError, Memo, Names, PeerGroup, PeerIndex, endpoint_meta, id32, lower_keeping,
};
use crate::cluster::{Cluster, Endpoint, EndpointKind, Evaluation, Flow, MixedFamilies, Policy};
use crate::model::{EndpointPort, Kind, PolicyType, Port, ResourceKey};
use crate::selector::Selector;

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
#[non_exhaustive]
pub enum Applied {
    /// On the fast path: the trees were kept.
    Fast,
    /// By a full rebuild.
    Rebuilt,
    /// Only the programs holding a changed policy were lowered again and their trees
    /// built; every other tree was kept.
    Incremental,
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

/// What lowering reads of an endpoint besides its addresses (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Behaviour {
    kind: EndpointKind,
    namespace: Option<String>,
    profiles: Vec<String>,
    ports: Vec<EndpointPort>,
    /// Bit `i`: selector `i` of [`Live::selectors`] matches.
    selects: Vec<u64>,
}

/// How the rules read an endpoint as a peer: which address lists its host address is
/// in, when no rule CIDR, network set or other endpoint prefix contains it (every
/// list is then a pointwise function of these, see the module doc). Applies-to is
/// not in it: two endpoints with one peer key and different policies share an
/// identity, not programs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PeerKey {
    kind: EndpointKind,
    /// Named ports as (name, protocol, port), sorted.
    ports: Vec<(String, u8, u16)>,
    /// Per distinct rule side of [`Live::sides`], two bits: its positive selector
    /// matches; its `notSelector` matches where the side can match (its positive
    /// selector matches, or it has none).
    reads: Vec<u64>,
}

/// The policies (indices into [`Cluster::policies`], ascending) whose rules have a
/// rule side, and whether a profile's rules have it.
#[derive(Clone, Debug, Default)]
struct Readers {
    policies: Vec<u32>,
    profile: bool,
}

impl Readers {
    fn add(&mut self, owner: Option<u32>) {
        match owner {
            Some(i) if self.policies.last() != Some(&i) => self.policies.push(i),
            Some(_) => {}
            None => self.profile = true,
        }
    }
}

/// Bound host prefixes of one behaviour, and the programs they share.
#[derive(Clone, Debug)]
struct Group {
    hosts: Vec<IpNet>,
    ingress: Option<ProgramId>,
    egress: Option<ProgramId>,
}

/// Endpoints without their programs before a change (see [`super::relower_policies`]).
fn unhinted<'e>(endpoints: &[&'e Endpoint]) -> Vec<(&'e Endpoint, Option<(ProgramId, ProgramId)>)> {
    endpoints.iter().map(|e| (*e, None)).collect()
}

/// Drops a replaced store off the control thread when it is large: freeing tens of
/// thousands of endpoints' labels costs milliseconds, more than the change itself.
fn retire(old: Cluster) {
    if old.endpoints.len() + old.policies.len() >= 1024 {
        reap(Box::new(old));
    }
}

/// Drops a replaced generation (its store, memo and trees) off the control thread
/// when its store is large: at 10,000 policies that costs about 30 ms.
fn retire_live(old: Live) {
    if old.cluster.endpoints.len() + old.cluster.policies.len() >= 1024 {
        reap(Box::new(old));
    }
}

/// Drops `old` on one process-wide thread; if that thread cannot be started, here.
fn reap(old: Box<dyn Send>) {
    use std::sync::mpsc::{Sender, channel};
    use std::sync::{Mutex, OnceLock};
    type Sent = Box<dyn Send>;
    static REAPER: OnceLock<Option<Mutex<Sender<Sent>>>> = OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let (tx, rx) = channel::<Sent>();
        // Started by a change, perhaps at a raised priority; it keeps the normal one.
        let base = crate::sys::base_nice();
        std::thread::Builder::new()
            .name("tiergate-reaper".into())
            .spawn(move || {
                crate::sys::settle_nice(base);
                for c in rx {
                    drop(c);
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    if let Some(tx) = reaper
        && let Ok(tx) = tx.lock()
    {
        // A send fails only when the thread is gone; `old` is dropped here then.
        let _ = tx.send(old);
    }
}

/// Tree parts an incremental policy change may add before a full rebuild compacts
/// them (each part holds the programs of one change; replaced ones stay until then).
/// Room for a compaction started at [`COMPACT_AT`] to be built and caught up beside a
/// steady stream of changes (see the module doc).
const MAX_PARTS: usize = 32;

/// Tree parts from which a compaction (a full build off the update path) starts.
const COMPACT_AT: usize = 8;
/// A policy change of more keys than this that changes most of the policies is a
/// full rebuild (see [`Live::update`]).
const MANY_CHANGED: usize = 64;

/// Policy keys a finished compaction may still lack for the change that finds it to
/// bring it up to the store inline, with its own keys (each may re-lower and build
/// one more program: about a change's work); with more, it catches up on a thread
/// again.
const INLINE_POLICIES: usize = 1;
/// Endpoint keys likewise (each a change on the endpoint fast path).
const INLINE_ENDPOINTS: usize = 64;

/// A generation being made on a thread of its own — a full build of a copy of the
/// live store, or a finished one catching up with the changes made while it was
/// built ([`Live::catch_up`]) — and the keys of every change the live store took
/// since the store that generation describes.
struct Compaction {
    build: std::thread::JoinHandle<Result<Live, LiveError>>,
    since: Vec<ResourceKey>,
    /// The thread's id once it runs (0 before), for [`Live::raise_compaction`].
    tid: Arc<std::sync::atomic::AtomicI32>,
    /// The nice value a change raised the thread to, if one did.
    raised_to: Option<i32>,
}

/// Tree parts from which a change running at a raised priority (`tiergate run
/// --change-nice`) raises a running compaction's thread to its own: the compaction
/// is on the changes' path then (at [`MAX_PARTS`] a change waits for it), and
/// back-to-back changes at the raised priority would otherwise keep it from a core.
const RAISE_AT: usize = 16;

#[cfg(test)]
thread_local! {
    /// Tests: a compaction's thread counts as running while this is set (makes the
    /// points where a change finds it finished deterministic).
    static HOLD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
thread_local! {
    /// Tests: compaction threads this thread starts wait while the flag is set (so
    /// that a test can see one running).
    static STALL: std::cell::RefCell<Option<Arc<std::sync::atomic::AtomicBool>>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// Tests: while set, a change's trees are always a new part (never merged into
    /// the last one), so that parts accumulate and compactions start.
    static NO_MERGE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`IdentityClassifier::with_programs_merged`] (the last part built again with the
/// change's programs when that costs at most twice the change's trees, keeping the
/// programs of `rebind` and `keep`), or in tests under `NO_MERGE` always a new part.
fn add_programs(
    from: &IdentityClassifier,
    programs: Vec<Program>,
    fresh: &[Nets],
    rebind: &[(IpNet, Option<ProgramId>, Option<ProgramId>)],
    keep: &[ProgramId],
    cfg: &BuildConfig,
) -> Result<(IdentityClassifier, Vec<ProgramId>), ProgramChangeRefused> {
    let fresh = from.resolve_fresh(fresh)?;
    add_fresh(from, programs, fresh, rebind, keep, cfg)
}

/// [`add_programs`] with the fresh lists resolved by `from`.
fn add_fresh(
    from: &IdentityClassifier,
    programs: Vec<Program>,
    fresh: FreshLists,
    rebind: &[(IpNet, Option<ProgramId>, Option<ProgramId>)],
    keep: &[ProgramId],
    cfg: &BuildConfig,
) -> Result<(IdentityClassifier, Vec<ProgramId>), ProgramChangeRefused> {
    #[cfg(test)]
    if NO_MERGE.with(std::cell::Cell::get) {
        return from.with_fresh_programs(programs, fresh, rebind, None, cfg);
    }
    from.with_fresh_programs(programs, fresh, rebind, Some(keep), cfg)
}

impl Compaction {
    /// `work` on a thread of its own (`None` if none can be started). Background work:
    /// the thread goes back to the priority the starting change's thread had before
    /// the change raised it ([`crate::sys::settle_nice`]), and publishes its id for
    /// [`Live::raise_compaction`].
    fn start(
        work: impl FnOnce() -> Result<Live, LiveError> + Send + 'static,
    ) -> Option<Compaction> {
        use std::sync::atomic::{AtomicI32, Ordering};
        let base = crate::sys::base_nice();
        let tid = Arc::new(AtomicI32::new(0));
        let own = Arc::clone(&tid);
        #[cfg(test)]
        let stall = STALL.with(|s| s.borrow().clone());
        let build = std::thread::Builder::new()
            .name("tiergate-compact".into())
            .spawn(move || {
                crate::sys::settle_nice(base);
                own.store(crate::sys::thread_id(), Ordering::Relaxed);
                #[cfg(test)]
                while stall.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                work()
            })
            .ok()?;
        Some(Compaction {
            build,
            since: Vec::new(),
            tid,
            raised_to: None,
        })
    }

    /// Whether its thread has finished.
    fn finished(&self) -> bool {
        #[cfg(test)]
        if HOLD.with(std::cell::Cell::get) {
            return false;
        }
        self.build.is_finished()
    }
}

/// What a catch-up sets in a finished compaction's store: under each key, the
/// resource as the live store has it (`None`: deleted).
struct Backlog {
    endpoints: Vec<(ResourceKey, Option<Arc<Endpoint>>)>,
    policies: Vec<(ResourceKey, Option<Policy>)>,
}

impl Backlog {
    /// The resources of `endpoints` and `policies` (keys of those kinds) in `store`,
    /// whose endpoint with a key `endpoint` finds.
    fn of<'c>(
        store: &'c Cluster,
        endpoint: impl Fn(&ResourceKey) -> Option<&'c Arc<Endpoint>>,
        endpoints: &[ResourceKey],
        policies: &[ResourceKey],
    ) -> Backlog {
        Backlog {
            endpoints: endpoints
                .iter()
                .map(|k| (k.clone(), endpoint(k).cloned()))
                .collect(),
            policies: policies
                .iter()
                .map(|k| (k.clone(), find_policy(store, k).cloned()))
                .collect(),
        }
    }
}

/// What a change that found a finished compaction did with it.
enum Step {
    /// Nothing, or adopted it (it described the live store): the change is still to
    /// be applied.
    Untouched,
    /// Handed it a catch-up; `with_change` when that includes the change's own keys
    /// (taken from the caller's next store), which must then not be tracked again.
    HandedOff { with_change: bool },
    /// Brought it up to the caller's next store, this change included, and adopted
    /// it: the change is applied.
    Applied(Applied),
}

/// The incremental path a change takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The endpoint fast path.
    Endpoints,
    /// The incremental policy path.
    Policies,
}

/// Keys sorted and deduplicated, endpoint keys apart from the others.
fn split_keys(mut keys: Vec<ResourceKey>) -> (Vec<ResourceKey>, Vec<ResourceKey>) {
    keys.sort();
    keys.dedup();
    keys.into_iter().partition(is_endpoint)
}

/// Whether a key names an endpoint.
fn is_endpoint(k: &ResourceKey) -> bool {
    matches!(k.kind, Kind::WorkloadEndpoint | Kind::HostEndpoint)
}

/// The policy of a store with this key (its policies are in key order).
fn find_policy<'c>(c: &'c Cluster, k: &ResourceKey) -> Option<&'c Policy> {
    c.policies
        .binary_search_by(|p| p.key.cmp(k))
        .ok()
        .map(|i| &c.policies[i])
}

/// Sets the policy under `k` of a key-ordered policy list (`None`: removes it).
fn put_policy(policies: &mut Vec<Policy>, k: &ResourceKey, now: Option<Policy>) {
    match (policies.binary_search_by(|p| p.key.cmp(k)), now) {
        (Ok(i), Some(p)) => policies[i] = p,
        (Ok(i), None) => {
            policies.remove(i);
        }
        (Err(i), Some(p)) => policies.insert(i, p),
        (Err(_), None) => {}
    }
}

fn is_host(n: &IpNet) -> bool {
    n.prefix_len() == n.max_prefix_len()
}

/// The named prefixes containing a host prefix (itself included), shortest first:
/// its *zone*. Two
/// hosts of one peer class in one zone are in the same address lists (see the module
/// doc).
type Zone = Vec<IpNet>;

/// The prefixes rules (`nets`, `notNets`) and network sets name, with the lengths
/// that let [`Named::zone`] find those containing a host in one hash lookup per
/// length.
#[derive(Clone, Debug, Default)]
struct Named {
    all: HashSet<IpNet>,
    /// The network sets' prefixes among them.
    sets: HashSet<IpNet>,
    /// Per family (IPv4, IPv6), the distinct lengths of named prefixes, ascending.
    lens: [Vec<u8>; 2],
}

impl Named {
    fn of(c: &Cluster) -> Named {
        let mut all = HashSet::new();
        for r in c.every_rule() {
            for m in [&r.source, &r.destination] {
                all.extend(m.nets.iter().chain(&m.not_nets).map(IpNet::trunc));
            }
        }
        let sets: HashSet<IpNet> = c
            .network_sets
            .iter()
            .flat_map(|s| s.nets.iter().map(IpNet::trunc))
            .collect();
        all.extend(&sets);
        Named {
            sets,
            ..Named::from_prefixes(all)
        }
    }

    /// `all` (prefixes in their truncated form) with its lengths.
    fn from_prefixes(all: HashSet<IpNet>) -> Named {
        let mut lens = [Vec::new(), Vec::new()];
        for n in &all {
            lens[usize::from(matches!(n, IpNet::V6(_)))].push(n.prefix_len());
        }
        for l in &mut lens {
            l.sort_unstable();
            l.dedup();
        }
        Named {
            all,
            sets: HashSet::new(),
            lens,
        }
    }

    /// Whether a rule or network set names exactly this prefix.
    fn contains(&self, n: &IpNet) -> bool {
        self.all.contains(n)
    }

    /// The named prefixes that contain `host`, shortest first (`host` itself last
    /// when it is named: a named host is in lists no other host is in).
    fn zone(&self, host: &IpNet) -> Zone {
        let f = usize::from(matches!(host, IpNet::V6(_)));
        self.lens[f]
            .iter()
            .filter(|&&len| len <= host.prefix_len())
            .filter_map(|&len| {
                let p = IpNet::new(host.addr(), len).ok()?.trunc();
                self.all.contains(&p).then_some(p)
            })
            .collect()
    }

    /// The slow twin of [`Named::zone`]: every named prefix tried.
    #[cfg(test)]
    fn zone_by_scan(&self, host: &IpNet) -> Zone {
        let mut z: Zone = self
            .all
            .iter()
            .filter(|p| p.contains(host))
            .copied()
            .collect();
        z.sort_unstable_by_key(IpNet::prefix_len);
        z
    }
}

/// A store with its published generation (see the module doc).
pub struct Live {
    cluster: Cluster,
    names: Names,
    classifier: Arc<IdentityClassifier>,
    cfg: BuildConfig,
    groups: HashMap<Behaviour, Group>,
    /// Every distinct selector of the store's policies and profiles.
    selectors: Vec<Selector>,
    /// The number of each of `selectors`.
    selector_numbers: HashMap<Selector, u32>,
    /// Behaviour by label key, computed once per distinct label set.
    behaviours: HashMap<LabelKey, Behaviour>,
    /// Every distinct rule side of the store as (positive selector, `notSelector`),
    /// indices into `selectors`.
    sides: Vec<(Option<u32>, Option<u32>)>,
    /// Per policy of the store (by index), the number of its applies-to selector in
    /// `selectors`.
    applies: Vec<u32>,
    /// Per side of `sides`, the policies and profiles whose rules have it.
    side_readers: Vec<Readers>,
    /// Per port name a rule side without a positive peer selector names (in `ports`
    /// or `notPorts`: every endpoint defining one is read by it), the policies and
    /// profiles whose rules name it there.
    port_readers: HashMap<String, Readers>,
    /// Per port name any rule side names (in `ports` or `notPorts`, with a positive
    /// peer selector or without), the policies and profiles whose rules name it.
    named_port_readers: HashMap<String, Readers>,
    /// Per peer key, per family (IPv4, IPv6), how a host with that key is
    /// classified: a bound exemplar's identity, or a spare one the build made for a
    /// peer class no endpoint had (see the module doc). Made again with the other
    /// indexes after an incremental policy change, from the bound exemplars and the
    /// spares still in `spares`.
    peers: HashMap<(PeerKey, Zone), [Option<HostIdentity>; 2]>,
    /// The build's spares whose identities are still in every list that must hold
    /// their peer class: those whose class a list lowered again since (an
    /// incremental policy change, a new peer class) reads are dropped
    /// ([`Live::keep_spares`]).
    spares: Vec<Spare>,
    /// The peer key of each of `spares` (by index), as the indexes now read it.
    spare_keys: Vec<PeerKey>,
    /// The behaviour of each of `spares` as the indexes read it, made with
    /// `spare_keys` ([`Live::index_peers`]); cleared when spares are dropped, and then
    /// made again where needed ([`Live::try_add_class`]).
    spare_behaviours: Vec<Behaviour>,
    /// The policies changed incrementally since the indexes were last refreshed.
    relowered: Vec<ResourceKey>,
    /// Prefixes rules (`nets`, `notNets`) and network sets name.
    named: Named,
    /// How many endpoints have each prefix.
    nets: HashMap<IpNet, u32>,
    /// Endpoint prefixes that are not host prefixes.
    wide: Vec<IpNet>,
    /// Where each endpoint is in the store's [`Cluster::endpoints`]. Endpoint changes
    /// on the fast path swap-remove and append, so after one the store's endpoints are
    /// no longer in key order (see the module doc).
    at: HashMap<ResourceKey, usize>,
    /// What the last lowering learned (`None` after a failed incremental change).
    memo: Option<Memo>,
    /// Whether `groups`, `selectors`, `behaviours` and `named` are out of date (a
    /// policy changed incrementally); refreshed before the next endpoint change.
    stale: bool,
    /// Set while [`Live::endpoints_fast`] applies several endpoint changes: the store
    /// does not show those applied so far, so no add lowers over it.
    store_lags: bool,
    /// The compaction running, if any (see the module doc).
    compaction: Option<Compaction>,
    /// A copy of the store's policies, kept equal to them (made with the indexes,
    /// changed with them by an incremental policy change): a compaction starts from
    /// a copy of the store, and copying 1,000 policies took 7–9 ms of the change
    /// that started it; with this the change copies the endpoint pointers and the
    /// rest, and the compaction's thread copies the policies.
    policies: Arc<Vec<Policy>>,
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
    pub fn new(mut cluster: Cluster, cfg: BuildConfig) -> Result<Live, LiveError> {
        let (lowered, memo, classifier, spares) = Self::build(&mut cluster, &cfg)?;
        let mut live = Live {
            cluster,
            names: Names::default(),
            classifier: Arc::new(classifier),
            cfg,
            groups: HashMap::new(),
            selectors: Vec::new(),
            selector_numbers: HashMap::new(),
            behaviours: HashMap::new(),
            sides: Vec::new(),
            applies: Vec::new(),
            side_readers: Vec::new(),
            port_readers: HashMap::new(),
            named_port_readers: HashMap::new(),
            peers: HashMap::new(),
            spares: Vec::new(),
            spare_keys: Vec::new(),
            spare_behaviours: Vec::new(),
            relowered: Vec::new(),
            named: Named::default(),
            nets: HashMap::new(),
            wide: Vec::new(),
            at: HashMap::new(),
            memo: Some(memo),
            stale: false,
            store_lags: false,
            compaction: None,
            policies: Arc::default(),
        };
        live.adopt(lowered, &spares);
        Ok(live)
    }

    /// Lowers and compiles `cluster` with spare endpoints added (see
    /// [`spare_endpoints`]); the spares are unbound again in the classifier and the
    /// names, and returned with how each of their hosts was classified. `cluster`
    /// is as it was on return.
    fn build(
        cluster: &mut Cluster,
        cfg: &BuildConfig,
    ) -> Result<(super::Lowered, Memo, IdentityClassifier, Vec<Spare>), LiveError> {
        let spares: Vec<Arc<Endpoint>> =
            spare_endpoints(cluster).into_iter().map(Arc::new).collect();
        let real = cluster.endpoints.len();
        cluster.endpoints.extend(spares.iter().cloned());
        let lowered = lower_keeping(cluster);
        cluster.endpoints.truncate(real);
        let (mut lowered, mut memo) = lowered?;
        // Lowered with the spares in the store: their lists hold the spares.
        memo.take_lowered();
        let classifier = IdentityClassifier::build(&lowered.set, cfg)?;
        let hosts: Vec<IpNet> = spares.iter().flat_map(|e| e.nets.clone()).collect();
        let mut out = Vec::with_capacity(spares.len());
        for e in spares {
            let mut like = [None, None];
            for n in &e.nets {
                like[usize::from(matches!(n, IpNet::V6(_)))] = classifier.host_identity(*n);
            }
            out.push(Spare { endpoint: e, like });
        }
        // Unbound, a spare's address is classified as the prefixes containing it,
        // as a build without it classifies it; kept as a ghost, a list lowered again
        // with the spares may name it (`Live::try_add_class`).
        let classifier = match classifier.without_ghost_hosts(&hosts) {
            Ok(c) => c,
            Err(_) => {
                let (lowered, mut memo) = lower_keeping(cluster)?;
                memo.take_lowered();
                let classifier = IdentityClassifier::build(&lowered.set, cfg)?;
                return Ok((lowered, memo, classifier, Vec::new()));
            }
        };
        lowered.names.endpoints.truncate(real);
        if let Some(owners) = lowered.names.owners.as_mut() {
            for n in &hosts {
                // Cannot fail: only values too large for the table are refused.
                let _ = owners.set_host(matches!(n, IpNet::V6(_)), addr_bits(n), None);
            }
        }
        Ok((lowered, memo, classifier, out))
    }

    /// Takes a full build's names and rebuilds the indexes and groups from it.
    fn adopt(&mut self, lowered: super::Lowered, spares: &[Spare]) {
        self.index();
        self.policies = Arc::new(self.cluster.policies.clone());
        self.at = self
            .cluster
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.clone(), i))
            .collect();
        self.stale = false;
        self.groups.clear();
        for b in &lowered.set.endpoints {
            let Some(owner) = self.cluster.endpoints.get(b.endpoint.0 as usize) else {
                continue;
            };
            // An address two endpoints have is in the lists of both: its identity is
            // not its owner's behaviour alone, so it is no exemplar.
            if !is_host(&b.net)
                || !owner.nets.iter().any(|n| n.trunc() == b.net)
                || self.nets.get(&b.net) != Some(&1)
            {
                continue;
            }
            let key = behaviour_of(&self.cluster, &self.selectors, &mut self.behaviours, owner);
            self.groups
                .entry(key)
                .or_insert_with(|| Group {
                    hosts: Vec::new(),
                    ingress: b.ingress,
                    egress: b.egress,
                })
                .hosts
                .push(b.net);
        }
        self.names = lowered.names;
        self.spares = spares.to_vec();
        self.relowered.clear();
        self.index_peers(spares);
    }

    /// The peer index from the groups' bound hosts, then `spares` for the peer keys
    /// and zones no bound host has.
    fn index_peers(&mut self, spares: &[Spare]) {
        self.peers.clear();
        let mut peers: HashMap<(PeerKey, Zone), [Option<HostIdentity>; 2]> = HashMap::new();
        for (b, g) in &self.groups {
            if b.kind != EndpointKind::Workload {
                continue;
            }
            let keys = self.peer_keys(b);
            for h in g.hosts.iter().take(16) {
                let f = usize::from(matches!(h, IpNet::V6(_)));
                let slot = peers
                    .entry(self.peer_entry(&keys, h))
                    .or_insert([None, None]);
                if slot[f].is_none() {
                    slot[f] = self.classifier.host_identity(*h);
                }
            }
        }
        let mut keys = Vec::with_capacity(spares.len());
        let mut behaviours = Vec::with_capacity(spares.len());
        for s in spares {
            let b = behaviour_of(
                &self.cluster,
                &self.selectors,
                &mut self.behaviours,
                &s.endpoint,
            );
            let both = self.peer_keys(&b);
            keys.push(both[usize::from(self.any_covered(&s.endpoint))].clone());
            behaviours.push(b);
            for n in &s.endpoint.nets {
                let f = usize::from(matches!(n, IpNet::V6(_)));
                let slot = peers
                    .entry(self.peer_entry(&both, n))
                    .or_insert([None, None]);
                if slot[f].is_none() {
                    slot[f] = s.like[f];
                }
            }
        }
        self.peers = peers;
        self.spare_keys = keys;
        self.spare_behaviours = behaviours;
    }

    /// The peer key of a behaviour, for a host in a zone where only the endpoint's
    /// own labels can match a positive selector (`whole` false: a `notSelector` is
    /// read only where its side's positive selector matches the endpoint or is
    /// absent), or for one that a network set's or a wider endpoint's prefix
    /// contains ([`Live::covered`], `whole` true): a positive selector can then match
    /// the host through that prefix while it does not match the endpoint, and the
    /// endpoint's `notSelector` result takes the host out of the side's list, so it
    /// is read on every side.
    fn peer_key(&self, b: &Behaviour, whole: bool) -> PeerKey {
        let bit = |i: u32| {
            b.selects
                .get(i as usize / 64)
                .is_some_and(|w| w >> (i % 64) & 1 == 1)
        };
        let mut reads = vec![0u64; (2 * self.sides.len()).div_ceil(64)];
        for (k, &(sel, not)) in self.sides.iter().enumerate() {
            let pos = sel.map(bit);
            if pos == Some(true) {
                reads[2 * k / 64] |= 1 << (2 * k % 64);
            }
            if (whole || pos != Some(false)) && not.is_some_and(bit) {
                reads[(2 * k + 1) / 64] |= 1 << ((2 * k + 1) % 64);
            }
        }
        let mut ports: Vec<(String, u8, u16)> = b
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.protocol.0, p.port))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        PeerKey {
            kind: b.kind,
            ports,
            reads,
        }
    }

    /// Whether a prefix containing `host` can carry labels a positive selector
    /// matches: a network set's prefix in its `zone`, or a wider endpoint prefix.
    fn covered(&self, host: &IpNet, zone: &Zone) -> bool {
        zone.iter().any(|p| self.named.sets.contains(p))
            || self.wide.iter().any(|w| w.contains(host))
    }

    /// Whether a prefix covers one of `ep`'s hosts ([`Live::covered`]).
    fn any_covered(&self, ep: &Endpoint) -> bool {
        ep.nets.iter().any(|n| {
            let h = n.trunc();
            self.covered(&h, &self.named.zone(&h))
        })
    }

    /// Both peer keys of a behaviour ([`Live::peer_key`]): for hosts no prefix
    /// covers, and for covered ones.
    fn peer_keys(&self, b: &Behaviour) -> [PeerKey; 2] {
        [self.peer_key(b, false), self.peer_key(b, true)]
    }

    /// The peer index entry of host `h` of a behaviour with peer keys `keys`: the
    /// key its zone reads it by, and the zone.
    fn peer_entry(&self, keys: &[PeerKey; 2], h: &IpNet) -> (PeerKey, Zone) {
        let zone = self.named.zone(h);
        let key = keys[usize::from(self.covered(h, &zone))].clone();
        (key, zone)
    }

    /// The peer key `ep` (of behaviour `b`) is read by: whole
    /// ([`Live::peer_key`]) when a prefix covers one of its hosts.
    fn spare_key(&self, ep: &Endpoint, b: &Behaviour) -> PeerKey {
        self.peer_key(b, self.any_covered(ep))
    }

    /// The behaviour of an endpoint (memoized by label key).
    fn behaviour(&mut self, ep: &Endpoint) -> Behaviour {
        behaviour_of(&self.cluster, &self.selectors, &mut self.behaviours, ep)
    }
}

/// [`Live::behaviour`] with the fields it reads apart.
fn behaviour_of(
    cluster: &Cluster,
    selectors: &[Selector],
    memo: &mut HashMap<LabelKey, Behaviour>,
    ep: &Endpoint,
) -> Behaviour {
    {
        let key = LabelKey::of(ep);
        if let Some(b) = memo.get(&key) {
            return b.clone();
        }
        let labels = cluster.endpoint_labels(ep);
        let mut selects = vec![0u64; selectors.len().div_ceil(64)];
        for (i, s) in selectors.iter().enumerate() {
            if s.matches(&labels) {
                selects[i / 64] |= 1 << (i % 64);
            }
        }
        let b = Behaviour {
            kind: ep.kind,
            namespace: ep.key.namespace.clone(),
            profiles: ep.profiles.clone(),
            ports: ep.ports.clone(),
            selects,
        };
        memo.insert(key, b.clone());
        b
    }
}

/// The number of a distinct selector, numbered and kept in `selectors` if new.
fn number<'a>(
    s: &'a Selector,
    seen: &mut HashMap<&'a Selector, u32>,
    selectors: &mut Vec<Selector>,
) -> u32 {
    let next = seen.len() as u32;
    *seen.entry(s).or_insert_with(|| {
        selectors.push(s.clone());
        next
    })
}

impl Live {
    /// The prefix indexes the fast path consults.
    fn index(&mut self) {
        self.named = Named::of(&self.cluster);
        self.nets.clear();
        let c = &self.cluster;
        let mut seen: HashMap<&Selector, u32> = HashMap::new();
        let mut selectors = Vec::new();
        self.applies = c
            .policies
            .iter()
            .map(|p| number(&p.applies_to, &mut seen, &mut selectors))
            .collect();
        // Per side and per open port name, the policies (indices) whose rules have it;
        // `None` marks a profile's rule.
        let mut sides: HashMap<(Option<u32>, Option<u32>), Readers> = HashMap::new();
        let mut ports: HashMap<String, Readers> = HashMap::new();
        let mut named: HashMap<String, Readers> = HashMap::new();
        let by_owner = c
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| (Some(i as u32), p.ingress.iter().chain(&p.egress)))
            .chain(
                c.profiles
                    .values()
                    .map(|p| (None, p.ingress.iter().chain(&p.egress))),
            );
        for (owner, rules) in by_owner {
            for r in rules {
                for m in [&r.source, &r.destination] {
                    for p in m.ports.iter().chain(&m.not_ports) {
                        if let Port::Named(n) = p {
                            named.entry(n.clone()).or_default().add(owner);
                        }
                    }
                    if m.selector.is_none() {
                        for p in m.ports.iter().chain(&m.not_ports) {
                            if let Port::Named(n) = p {
                                ports.entry(n.clone()).or_default().add(owner);
                            }
                        }
                    }
                    let side = (
                        m.selector
                            .as_ref()
                            .map(|s| number(s, &mut seen, &mut selectors)),
                        m.not_selector
                            .as_ref()
                            .map(|s| number(s, &mut seen, &mut selectors)),
                    );
                    if side != (None, None) {
                        sides.entry(side).or_default().add(owner);
                    }
                }
            }
        }
        let mut sides: Vec<_> = sides.into_iter().collect();
        sides.sort_unstable_by_key(|s| s.0);
        self.side_readers = sides.iter().map(|s| s.1.clone()).collect();
        self.sides = sides.into_iter().map(|s| s.0).collect();
        self.port_readers = ports;
        self.named_port_readers = named;
        // The inverse of `selectors`, made from it (`number` numbered them so).
        self.selector_numbers = selectors
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        #[cfg(test)]
        assert!(
            seen.iter()
                .all(|(s, i)| self.selector_numbers.get(*s) == Some(i)),
            "the selector numbers are not the inverse of the selectors"
        );
        self.selectors = selectors;
        self.behaviours.clear();
        for e in &c.endpoints {
            for n in &e.nets {
                *self.nets.entry(n.trunc()).or_insert(0) += 1;
            }
        }
        self.wide = self.nets.keys().filter(|n| !is_host(n)).copied().collect();
    }

    /// The store as the live generation sees it.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The published classifier.
    pub fn classifier(&self) -> &Arc<IdentityClassifier> {
        &self.classifier
    }

    /// Waits for a running compaction and adopts it (tests: makes the adoption
    /// point deterministic).
    #[cfg(test)]
    fn settle(&mut self) {
        self.adopt_compaction(true);
    }

    /// Bytes of the lowering memo kept for incremental policy changes (every
    /// policy's lowered rules, the distinct address lists they name counted once —
    /// rules, programs and the classifier share them —, the program maps), roughly;
    /// 0 when none is kept.
    pub fn memo_bytes(&self) -> usize {
        self.memo.as_ref().map_or(0, Memo::bytes)
    }

    /// Names of the published classifier's ids.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Replaces the whole store: a full rebuild.
    pub fn set_cluster(&mut self, mut cluster: Cluster) -> Result<Applied, LiveError> {
        let (lowered, memo, classifier, spares) = Self::build(&mut cluster, &self.cfg)?;
        // A running compaction describes an older store; its thread finishes alone.
        self.compaction = None;
        retire(std::mem::replace(&mut self.cluster, cluster));
        self.memo = Some(memo);
        self.classifier = Arc::new(classifier);
        self.adopt(lowered, &spares);
        Ok(Applied::Rebuilt)
    }

    /// Applies a store change: `next` is the whole new store, as
    /// [`Cluster::from_resources`] or [`Cluster::update`] give it (endpoints in key
    /// order), and `changed` the keys of every resource added, modified or deleted
    /// since the live store (a key listed that did not change costs nothing; a change
    /// not listed is missed by the incremental paths, so the caller lists them all).
    /// The caller keeps `next`: the fast and incremental paths clone only the changed
    /// resources from it, a rebuild clones it whole.
    ///
    /// When every changed key is a workload or host endpoint and each change takes
    /// the endpoint fast path (see the module doc: removals, then additions, a
    /// modified endpoint being both), the trees are kept ([`Applied::Fast`]).
    /// Anything else is a full rebuild of `next` ([`Applied::Rebuilt`]), as is a
    /// policy change of more than 64 keys that changes most of the store's policies
    /// (it would lower and build nearly everything as one more tree part). On error
    /// the previous generation, store and names stay as they were.
    ///
    /// Tree parts that policy changes accumulate are compacted by a full build on
    /// another thread, caught up there and adopted by a later call (see the module
    /// doc).
    pub fn update(
        &mut self,
        next: &Cluster,
        changed: &[ResourceKey],
    ) -> Result<Applied, LiveError> {
        self.changing_to(Some(next), changed, |live| live.apply_update(next, changed))
    }

    /// A change of the keys `keys` made by `change`, with the compaction's
    /// bookkeeping around it ([`Live::changing_to`] without the next store).
    fn changing(
        &mut self,
        keys: &[ResourceKey],
        change: impl FnOnce(&mut Live) -> Result<Applied, LiveError>,
    ) -> Result<Applied, LiveError> {
        self.changing_to(None, keys, change)
    }

    /// A change of the keys `keys` made by `change`, to the caller's store `next` if
    /// given, with the compaction's bookkeeping around it: a finished compaction is
    /// adopted, handed a catch-up, or brought up to `next` with this change and
    /// adopted in place of applying it ([`Live::compaction_step`]; waited for when
    /// the parts are at their limit), and the change is tracked after.
    fn changing_to(
        &mut self,
        next: Option<&Cluster>,
        keys: &[ResourceKey],
        change: impl FnOnce(&mut Live) -> Result<Applied, LiveError>,
    ) -> Result<Applied, LiveError> {
        self.raise_compaction();
        let wait = self.classifier.stats().parts >= MAX_PARTS;
        let with_change = match self.compaction_step(next, keys, wait) {
            Step::Applied(applied) => {
                self.track(&[], applied);
                return Ok(applied);
            }
            Step::HandedOff { with_change } => with_change,
            Step::Untouched => false,
        };
        let applied = change(self).inspect_err(|_| {
            // The live store kept these keys as they were; a catch-up handed them as
            // they are in `next` must set them back.
            if let Some(c) = &mut self.compaction {
                c.since.extend(keys.iter().cloned());
            }
        })?;
        self.track(if with_change { &[] } else { keys }, applied);
        Ok(applied)
    }

    /// After a change that succeeded: a rebuild makes a running compaction pointless,
    /// any other change is one it must catch up with; enough parts start one.
    fn track(&mut self, changed: &[ResourceKey], applied: Applied) {
        if applied == Applied::Rebuilt {
            self.compaction = None;
            return;
        }
        if let Some(c) = &mut self.compaction {
            c.since.extend(changed.iter().cloned());
            return;
        }
        // Also when half the free ids of an identity's block are taken (new peer
        // classes split from it): the build renews them before they run out.
        let s = self.classifier.stats();
        if s.parts < COMPACT_AT && 2 * s.most_split < s.block_ids {
            return;
        }
        // The store without its policies here; they are copied on the thread from the
        // copy kept equal to them.
        let policies = std::mem::take(&mut self.cluster.policies);
        let mut copy = self.cluster.clone();
        self.cluster.policies = policies;
        #[cfg(test)]
        assert_eq!(
            format!("{:?}", self.policies),
            format!("{:?}", self.cluster.policies),
            "the kept copy of the policies differs from the store's"
        );
        let shared = self.policies.clone();
        let cfg = self.cfg;
        // If no thread can be started, the change that finds MAX_PARTS rebuilds.
        self.compaction = Compaction::start(move || {
            copy.policies = shared.to_vec();
            // Let go at once: a policy change meanwhile changes the live copy in
            // place instead of copying it.
            drop(shared);
            Live::new(copy, cfg)
        });
    }

    /// From [`RAISE_AT`] parts on, a change that runs at a raised priority
    /// ([`crate::sys::Nice`]) gives a running compaction's thread its own nice value
    /// when that is higher than the thread's, once per compaction (refused, it stays
    /// as it was).
    fn raise_compaction(&mut self) {
        let Some(c) = &mut self.compaction else {
            return;
        };
        let tid = c.tid.load(std::sync::atomic::Ordering::Relaxed);
        // A finished thread's id may be given to another thread: only a running one.
        if self.classifier.stats().parts < RAISE_AT
            || crate::sys::base_nice().is_none()
            || c.raised_to.is_some()
            || tid == 0
            || c.build.is_finished()
        {
            return;
        }
        let Ok(at) = crate::sys::thread_nice(tid) else {
            return;
        };
        if let Some(n) = crate::sys::own_nice().filter(|&n| n < at)
            && crate::sys::set_thread_nice(tid, n).is_ok()
        {
            c.raised_to = Some(n);
        }
    }

    /// What a change of `keys` (to the caller's store `next`, if given) does with a
    /// compaction that has finished (or, with `wait`, once it has), before the change
    /// is applied:
    /// - none changed since its store: it is adopted, and the change applied to it;
    /// - a change of `next` with endpoint or policy keys only that an incremental
    ///   path takes, and few policy keys changed since its store (at most
    ///   [`INLINE_POLICIES`], and [`INLINE_ENDPOINTS`] endpoint keys; any number with
    ///   `wait`): it is brought up to `next` under those keys and this change's
    ///   ([`Live::bring_up`]) and adopted, and this generation is not changed;
    /// - else, unless `wait`, it gets a catch-up on a thread of its own
    ///   ([`Live::catch_up`]) to the live store under the keys changed since, or, for a
    ///   change of `next` as above, to `next` under those and this change's keys,
    ///   while this generation takes the change;
    /// - with `wait` and no `next`, the keys changed since are applied to it here
    ///   ([`Live::replay`]) and it is adopted.
    ///
    /// A change of `next` that no incremental path takes leaves it alone (that
    /// change rebuilds, which drops it). A build or catch-up that failed is dropped.
    /// With `wait`, one the incremental paths cannot bring up is caught up here one
    /// key at a time ([`Live::catch_up`], a rebuild where a path refuses) and
    /// adopted, rather than dropped for a new compaction the next change would wait
    /// for again.
    fn compaction_step(
        &mut self,
        next: Option<&Cluster>,
        keys: &[ResourceKey],
        wait: bool,
    ) -> Step {
        match &self.compaction {
            Some(c) if wait || c.finished() => {}
            _ => return Step::Untouched,
        }
        // The path of the change, when it is one whose keys a catch-up can take from
        // `next`; any other change of `next` rebuilds, which drops the compaction.
        let stage = next.and_then(|n| self.incremental_stage(n, keys));
        if next.is_some() && stage.is_none() {
            return Step::Untouched;
        }
        let Some(Compaction { build, since, .. }) = self.compaction.take() else {
            return Step::Untouched;
        };
        let Ok(Ok(mut fresh)) = build.join() else {
            return Step::Untouched;
        };
        let (mut endpoints, mut policies) = split_keys(since);
        if endpoints.is_empty() && policies.is_empty() {
            retire_live(std::mem::replace(self, fresh));
            return Step::Untouched;
        }
        if let (Some(next), Some(stage)) = (next, stage) {
            let inline =
                wait || (policies.len() <= INLINE_POLICIES && endpoints.len() <= INLINE_ENDPOINTS);
            let ours = match stage {
                Stage::Endpoints => &mut endpoints,
                Stage::Policies => &mut policies,
            };
            ours.extend(keys.iter().cloned());
            ours.sort();
            ours.dedup();
            let applied = match stage {
                Stage::Endpoints => Applied::Fast,
                Stage::Policies => Applied::Incremental,
            };
            if inline && fresh.bring_up(next, &endpoints, &policies) {
                retire_live(std::mem::replace(self, fresh));
                return Step::Applied(applied);
            }
            let backlog = Backlog::of(next, |k| find_endpoint(next, k), &endpoints, &policies);
            if wait {
                // At the limit of parts: brought up here one key at a time (a
                // rebuild where a path refuses), not dropped for a new compaction
                // the next change would wait for again.
                return match fresh.catch_up(backlog) {
                    Ok(fresh) => {
                        retire_live(std::mem::replace(self, fresh));
                        Step::Applied(applied)
                    }
                    Err(_) => Step::Untouched,
                };
            }
            self.hand_off(fresh, backlog);
            return Step::HandedOff { with_change: true };
        }
        if wait {
            self.replay(fresh, endpoints, policies);
            return Step::Untouched;
        }
        let backlog = self.backlog(&endpoints, &policies);
        self.hand_off(fresh, backlog);
        Step::HandedOff { with_change: false }
    }

    /// Which incremental path a change of `changed` to `next` takes, if one may (see
    /// [`Live::apply_update`]): policies only, not most of a large set; or endpoints
    /// only.
    fn incremental_stage(&self, next: &Cluster, changed: &[ResourceKey]) -> Option<Stage> {
        if !changed.is_empty() && changed.iter().all(|k| k.kind.is_policy()) {
            return (!self.most_policies(next, changed)).then_some(Stage::Policies);
        }
        changed.iter().all(is_endpoint).then_some(Stage::Endpoints)
    }

    /// Whether a policy change of `changed` changes most of a large set (a whole set
    /// applied again): a full build costs less than lowering every program again and
    /// building all their trees as one more part (2.5-3 s against 0.2 s at 10,000
    /// policies).
    fn most_policies(&self, next: &Cluster, changed: &[ResourceKey]) -> bool {
        changed.len() > MANY_CHANGED
            && 2 * changed.len() > next.policies.len().max(self.cluster.policies.len())
    }

    /// Starts the catch-up of `fresh`, a finished compaction, with `backlog` on a
    /// thread of its own; the changes from now on are tracked for the next one. If
    /// no thread can be started, `fresh` is dropped (a later change starts a new
    /// compaction).
    fn hand_off(&mut self, fresh: Live, backlog: Backlog) {
        self.compaction = Compaction::start(move || fresh.catch_up(backlog));
    }

    /// A finished compaction brought up to its store with `backlog` set in it (on
    /// the compaction's thread): endpoint keys first, through the store with those
    /// endpoints set (in key order, as the endpoint path reads them) and its own
    /// policies, then policy keys, through the whole store. Any path may be taken,
    /// a full rebuild included.
    fn catch_up(mut self, backlog: Backlog) -> Result<Live, LiveError> {
        let Backlog {
            endpoints,
            policies,
        } = backlog;
        let mut next = self.cluster.clone();
        next.endpoints
            .sort_by(|a, b| endpoint_rank(&a.key).cmp(&endpoint_rank(&b.key)));
        // One endpoint key at a time, each through the store with the keys before it
        // set: the endpoint path takes several endpoint changes at once only when no
        // add among them is a new peer class (it lowers over the store), and the
        // backlog is mostly one pod's add and later removal. Keys whose endpoint is
        // what this store has (a pod added and removed since) change nothing;
        // removals go first (an address freed by one may be taken by another).
        let mut todo: Vec<(ResourceKey, Option<Arc<Endpoint>>)> = endpoints
            .into_iter()
            .filter(|(k, e)| !same_endpoint(self.endpoint(k), e.as_ref()))
            .collect();
        todo.sort_by_key(|(_, e)| e.is_some());
        for (k, e) in todo {
            let at = next
                .endpoints
                .binary_search_by(|x| endpoint_rank(&x.key).cmp(&endpoint_rank(&k)));
            match (at, e) {
                (Ok(i), Some(e)) => next.endpoints[i] = e,
                (Ok(i), None) => {
                    next.endpoints.remove(i);
                }
                (Err(i), Some(e)) => next.endpoints.insert(i, e),
                (Err(_), None) => continue,
            }
            self.apply_update(&next, std::slice::from_ref(&k))?;
        }
        if !policies.is_empty() {
            let keys: Vec<ResourceKey> = policies.iter().map(|(k, _)| k.clone()).collect();
            for (k, p) in policies {
                put_policy(&mut next.policies, &k, p);
            }
            self.apply_update(&next, &keys)?;
        }
        Ok(self)
    }

    /// The endpoint of the live store with this key.
    fn endpoint(&self, k: &ResourceKey) -> Option<&Arc<Endpoint>> {
        self.at.get(k).and_then(|&i| self.cluster.endpoints.get(i))
    }

    /// A finished compaction brought up to `next` under `endpoints` and `policies`
    /// (the keys of every change since its store, this one's included), on the
    /// incremental paths only: the endpoint keys on the endpoint fast path through
    /// `next` (whose endpoints are in key order), its own policies kept; then the
    /// policy keys on the incremental policy path. `false` when a path refuses; the
    /// generation is then one of its own store still, with some of these keys set
    /// as in `next` and the others as they were.
    fn bring_up(
        &mut self,
        next: &Cluster,
        endpoints: &[ResourceKey],
        policies: &[ResourceKey],
    ) -> bool {
        // A pod added and removed since is in neither store: nothing to do (the
        // endpoint path reads a key in neither store as one it cannot place).
        let endpoints: Vec<ResourceKey> = endpoints
            .iter()
            .filter(|k| !same_endpoint(self.endpoint(k), find_endpoint(next, k)))
            .cloned()
            .collect();
        if !endpoints.is_empty() {
            match self.endpoints_fast(next, &endpoints) {
                Fast::Done => {}
                Fast::Untouched => return false,
                Fast::Partial(saved) => {
                    self.restore(*saved);
                    return false;
                }
            }
        }
        if !policies.is_empty() {
            if !self.policies_incremental(next, policies) {
                return false;
            }
            self.patch_policies(next, policies);
        }
        true
    }

    /// Takes the compaction's build in place of this generation if it has finished
    /// (or, with `wait`, once it has), brought up to the live store here first
    /// ([`Live::replay`]). A build that failed, or a catch-up that failed, is dropped
    /// and this generation stays.
    #[cfg(test)]
    fn adopt_compaction(&mut self, wait: bool) {
        match &self.compaction {
            Some(c) if wait || c.finished() => {}
            _ => return,
        }
        let Some(Compaction { build, since, .. }) = self.compaction.take() else {
            return;
        };
        if let Ok(Ok(fresh)) = build.join() {
            let (endpoints, policies) = split_keys(since);
            self.replay(fresh, endpoints, policies);
        }
    }

    /// Takes `fresh`, a finished compaction, in place of this generation, brought up
    /// to the live store here by the changes of `endpoints`, then `policies` (the
    /// keys changed since its store); if that fails it is dropped and this
    /// generation stays.
    fn replay(&mut self, fresh: Live, endpoints: Vec<ResourceKey>, policies: Vec<ResourceKey>) {
        if let Ok(fresh) = fresh.catch_up(self.backlog(&endpoints, &policies)) {
            retire_live(std::mem::replace(self, fresh));
        }
    }

    /// The resources of the live store under these keys.
    fn backlog(&self, endpoints: &[ResourceKey], policies: &[ResourceKey]) -> Backlog {
        Backlog::of(&self.cluster, |k| self.endpoint(k), endpoints, policies)
    }

    /// [`Live::update`] without the compaction's bookkeeping.
    fn apply_update(
        &mut self,
        next: &Cluster,
        changed: &[ResourceKey],
    ) -> Result<Applied, LiveError> {
        if !changed.is_empty() && changed.iter().all(|k| k.kind.is_policy()) {
            if !self.most_policies(next, changed) && self.policies_incremental(next, changed) {
                self.patch_policies(next, changed);
                return Ok(Applied::Incremental);
            }
            return self.set_cluster(next.clone());
        }
        if changed
            .iter()
            .all(|k| matches!(k.kind, Kind::WorkloadEndpoint | Kind::HostEndpoint))
        {
            match self.endpoints_fast(next, changed) {
                Fast::Done => return Ok(Applied::Fast),
                Fast::Untouched => return self.set_cluster(next.clone()),
                Fast::Partial(saved) => {
                    return self
                        .set_cluster(next.clone())
                        .inspect_err(|_| self.restore(*saved));
                }
            }
        }
        self.set_cluster(next.clone())
    }

    /// The live store's policies made those of `next` under the `changed` keys (the
    /// only ones that differ after an incremental policy change).
    fn patch_policies(&mut self, next: &Cluster, changed: &[ResourceKey]) {
        for k in changed {
            put_policy(&mut self.cluster.policies, k, find_policy(next, k).cloned());
            put_policy(
                Arc::make_mut(&mut self.policies),
                k,
                find_policy(next, k).cloned(),
            );
        }
    }

    /// The policy changes of [`Live::update`] without a full rebuild (see the module
    /// doc); `false` when they need one (nothing is changed then, except that the
    /// lowering memo may be dropped).
    fn policies_incremental(&mut self, next: &Cluster, changed: &[ResourceKey]) -> bool {
        if self.memo.is_none() || self.classifier.stats().parts >= MAX_PARTS {
            return false;
        }
        let affected = {
            let old = &self.cluster;
            if old.tiers != next.tiers
                || !old.profiles.keys().eq(next.profiles.keys())
                || old.endpoints.len() != next.endpoints.len()
                || old.network_sets.len() != next.network_sets.len()
                // Every endpoint prefix a host prefix of one endpoint: a binding's
                // programs are then its endpoint's.
                || !self.nets.iter().all(|(n, &c)| is_host(n) && c == 1)
            {
                return false;
            }
            let find = |c: &'_ Cluster, k: &ResourceKey| {
                c.policies
                    .binary_search_by(|p| p.key.cmp(k))
                    .ok()
                    .map(|i| c.policies[i].clone())
            };
            let pairs: Vec<_> = changed
                .iter()
                .map(|k| (find(old, k), find(next, k)))
                .collect();
            let added = pairs
                .iter()
                .filter(|p| p.0.is_none() && p.1.is_some())
                .count();
            let gone = pairs
                .iter()
                .filter(|p| p.0.is_some() && p.1.is_none())
                .count();
            if old.policies.len() + added != next.policies.len() + gone {
                return false;
            }
            // The endpoints the old or new version of a changed policy applies to.
            type Identity<'a> = (&'a std::collections::BTreeMap<String, String>, &'a [String]);
            let mut seen: HashMap<Identity<'_>, bool> = HashMap::new();
            let mut affected: Vec<&Endpoint> = Vec::new();
            for e in &next.endpoints {
                let hit = *seen
                    .entry((&e.labels, e.profiles.as_slice()))
                    .or_insert_with(|| {
                        pairs.iter().any(|(a, b)| {
                            [PolicyType::Ingress, PolicyType::Egress]
                                .into_iter()
                                .any(|d| {
                                    a.as_ref().is_some_and(|p| old.policy_applies(p, e, d))
                                        || b.as_ref().is_some_and(|p| next.policy_applies(p, e, d))
                                })
                        })
                    });
                if hit && !e.nets.is_empty() {
                    affected.push(e);
                }
            }
            affected
        };
        let Some(mut memo) = self.memo.take() else {
            return false;
        };
        // On failure the memo is dropped (it may count programs the classifier does
        // not have); the rebuild makes a new one.
        let Ok(programs) = super::relower_policies(
            next,
            &mut self.names,
            &mut memo,
            changed,
            &unhinted(&affected),
            None,
            None,
        ) else {
            return false;
        };
        let added = memo.take_programs();
        // Every policy or profile lowered, the changed ones and any lowered for the
        // first time since the build (its lists hold no spare): read at the next
        // endpoint change (`refresh`).
        let lowered = memo.take_lowered();
        let rebind: Vec<(IpNet, Option<ProgramId>, Option<ProgramId>)> = affected
            .iter()
            .zip(&programs)
            .flat_map(|(e, &(i, g))| e.nets.iter().map(move |n| (n.trunc(), Some(i), Some(g))))
            .collect();
        // The changed policies' lists were lowered from the store as it is now; every
        // other list in the memo is one the classifier knows (and has followed the
        // endpoint fast path's host changes since).
        let ids: Vec<_> = changed.iter().filter_map(|k| memo.policy(k)).collect();
        let fresh = memo.lists_of(&ids);
        let Ok((c, dropped)) =
            add_programs(&self.classifier, added, &fresh, &rebind, &[], &self.cfg)
        else {
            return false;
        };
        memo.drop_programs(&dropped);
        // A modified policy may have moved tier.
        for k in changed {
            if let (Some(id), Ok(i)) = (
                memo.policy(k),
                next.policies.binary_search_by(|p| p.key.cmp(k)),
            ) {
                Arc::make_mut(&mut self.names.policies)[id.0 as usize].tier =
                    next.policies[i].tier.clone();
            }
        }
        self.classifier = Arc::new(c);
        self.memo = Some(memo);
        self.stale = true;
        self.relowered.extend_from_slice(changed);
        self.relowered.extend(lowered.into_iter().map(|(_, k)| k));
        true
    }

    /// Brings the endpoint fast path's indexes up to date after a policy change: the
    /// selectors and named prefixes from the store, the groups from the published
    /// bindings.
    fn refresh(&mut self) {
        if !self.stale {
            return;
        }
        self.index();
        self.groups.clear();
        for owner in &self.cluster.endpoints {
            for n in &owner.nets {
                let n = n.trunc();
                if !is_host(&n) || self.nets.get(&n) != Some(&1) {
                    continue;
                }
                let Some((id, ingress, egress)) = self.classifier.binding(n) else {
                    continue;
                };
                if self.names.endpoint(id).is_none_or(|e| e.key != owner.key) {
                    continue;
                }
                let key = behaviour_of(&self.cluster, &self.selectors, &mut self.behaviours, owner);
                self.groups
                    .entry(key)
                    .or_insert_with(|| Group {
                        hosts: Vec::new(),
                        ingress,
                        egress,
                    })
                    .hosts
                    .push(n);
            }
        }
        // Spare identities are in the lists of the build, not necessarily in those
        // the policy changes since resolved (a fresh list takes only the identities
        // of bound hosts): the spares whose class a changed policy reads are dropped
        // (removed exemplars' identities too: only bound ones are indexed), the
        // others stay. A list of a changed policy that does not read a spare's class
        // lacks its identity rightly, and one equal to a list the classifier knew
        // keeps that list's form, which holds a spare's identity only if its
        // addresses hold the spare's (no endpoint has a spare's address).
        let (readers, profiles) = self.policy_indices(&self.relowered);
        self.relowered.clear();
        // Read with the indexes as they are now.
        self.spare_keys.clear();
        self.keep_spares(&readers, profiles);
        let spares = std::mem::take(&mut self.spares);
        self.index_peers(&spares);
        self.spares = spares;
        self.stale = false;
    }

    /// The endpoint changes of [`Live::update`] on the fast path, in place.
    fn endpoints_fast(&mut self, next: &Cluster, changed: &[ResourceKey]) -> Fast {
        self.refresh();
        // An endpoint in a namespace nothing else names brings (or takes) the
        // namespace's implicit profile: a rebuild.
        if !self.cluster.profiles.keys().eq(next.profiles.keys()) {
            return Fast::Untouched;
        }
        let mut gone = Vec::new();
        let mut new = Vec::new();
        for k in changed {
            let old = self.at.get(k).and_then(|&i| self.cluster.endpoints.get(i));
            let now = find_endpoint(next, k);
            if old.is_none() && now.is_none() {
                // A key in neither store: not one the store spells this way.
                return Fast::Untouched;
            }
            if let (Some(a), Some(b)) = (old, now)
                && a == b
            {
                continue;
            }
            gone.extend(old.cloned());
            new.extend(now.cloned());
        }
        // Everything else is the same store: as many endpoints as the changes say.
        if self.cluster.endpoints.len() + new.len() != next.endpoints.len() + gone.len()
            || self.cluster.policies.len() != next.policies.len()
            || self.cluster.network_sets.len() != next.network_sets.len()
        {
            return Fast::Untouched;
        }
        if gone.is_empty() && new.is_empty() {
            return Fast::Done;
        }
        // An add of a genuinely new peer class lowers over the store, which shows the
        // changes only after all of them: it is refused unless this is one endpoint
        // added or replaced (`store_lags`, below). Found here, before anything is
        // changed, saved and undone (a finished compaction brought up inline with a
        // pod removed since and this one added spent 30-50 ms on that).
        let lags = new.len() > 1
            || gone
                .iter()
                .any(|g| new.first().is_none_or(|n| n.key != g.key));
        if lags && new.iter().any(|e| self.takes_new_class(e)) {
            return Fast::Untouched;
        }
        // One addition or one removal changes nothing when refused; more may have
        // gone through when a later one is refused.
        let saved = (gone.len() + new.len() > 1).then(|| Box::new(self.save()));
        let partial = |saved: Option<Box<Saved>>, first: bool| match saved {
            Some(s) if !first => Fast::Partial(s),
            _ => Fast::Untouched,
        };
        let mut first = true;
        for e in &gone {
            if !self.try_remove(e) {
                return partial(saved, first);
            }
            first = false;
        }
        // The store shows the changes only after all of them: unless this is one
        // endpoint added or replaced, an add must not lower over it.
        self.store_lags = new.len() > 1
            || gone
                .iter()
                .any(|g| new.first().is_none_or(|n| n.key != g.key));
        for e in &new {
            if !self.try_add(e) {
                self.store_lags = false;
                return partial(saved, first);
            }
            first = false;
        }
        self.store_lags = false;
        // A modified endpoint keeps its place; the others go and come.
        for e in &gone {
            if !new.iter().any(|n| n.key == e.key) {
                self.take_endpoint(&e.key);
            }
        }
        for e in new {
            match self.at.get(&e.key) {
                Some(&i) => self.cluster.endpoints[i] = e,
                None => self.put_endpoint(e),
            }
        }
        Fast::Done
    }

    /// Removes the endpoint with this key from the store: the last one is swapped into
    /// its place, unless that one has an address another endpoint's prefix also
    /// contains (`eval` picks such an address's owner by store order, and so did the
    /// build), when the ones after it move up instead. Returns it and how to put it
    /// back.
    fn take_endpoint(&mut self, key: &ResourceKey) -> Option<(Arc<Endpoint>, Taken)> {
        let i = self.at.remove(key)?;
        let eps = &mut self.cluster.endpoints;
        let (nets, wide) = (&self.nets, &self.wide);
        let shared = |e: &Endpoint| {
            e.nets.iter().map(IpNet::trunc).any(|n| {
                !is_host(&n)
                    || nets.get(&n).is_some_and(|&c| c > 1)
                    || wide.iter().any(|w| w.contains(&n))
            })
        };
        if i + 1 < eps.len() && eps.last().is_some_and(|e| shared(e)) {
            let e = eps.remove(i);
            for (j, moved) in eps.iter().enumerate().skip(i) {
                self.at.insert(moved.key.clone(), j);
            }
            return Some((e, Taken::Shifted(i)));
        }
        let e = eps.swap_remove(i);
        if let Some(moved) = eps.get(i) {
            self.at.insert(moved.key.clone(), i);
        }
        Some((e, Taken::Swapped(i)))
    }

    /// Puts back an endpoint [`Live::take_endpoint`] took, where it was.
    fn untake(&mut self, e: Arc<Endpoint>, how: Taken) {
        let eps = &mut self.cluster.endpoints;
        match how {
            Taken::Swapped(i) if i < eps.len() => {
                let moved = std::mem::replace(&mut eps[i], e);
                self.at.insert(moved.key.clone(), eps.len());
                self.at.insert(eps[i].key.clone(), i);
                eps.push(moved);
            }
            Taken::Swapped(i) | Taken::Shifted(i) => {
                let i = i.min(eps.len());
                eps.insert(i, e);
                for (j, moved) in eps.iter().enumerate().skip(i) {
                    self.at.insert(moved.key.clone(), j);
                }
            }
        }
    }

    /// Appends an endpoint to the store.
    fn put_endpoint(&mut self, e: Arc<Endpoint>) {
        self.at.insert(e.key.clone(), self.cluster.endpoints.len());
        self.cluster.endpoints.push(e);
    }

    fn save(&self) -> Saved {
        Saved {
            classifier: self.classifier.clone(),
            names: self.names.clone(),
            groups: self.groups.clone(),
            nets: self.nets.clone(),
        }
    }

    fn restore(&mut self, s: Saved) {
        self.classifier = s.classifier;
        self.names = s.names;
        self.groups = s.groups;
        self.nets = s.nets;
        // The changes undone may have numbered programs in the memo that the restored
        // classifier lacks; without a memo the next change that needs one rebuilds.
        self.memo = None;
    }

    fn rebuild(&mut self) -> Result<Applied, LiveError> {
        let mut cluster = std::mem::take(&mut self.cluster);
        match Self::build(&mut cluster, &self.cfg) {
            Ok((lowered, memo, classifier, spares)) => {
                self.cluster = cluster;
                self.memo = Some(memo);
                self.classifier = Arc::new(classifier);
                self.adopt(lowered, &spares);
                Ok(Applied::Rebuilt)
            }
            Err(e) => {
                self.cluster = cluster;
                Err(e)
            }
        }
    }

    /// Adds an endpoint (one whose key the store has replaces it, as
    /// [`Live::replace_endpoint`]).
    pub fn add_endpoint(&mut self, ep: Endpoint) -> Result<Applied, LiveError> {
        let key = ep.key.clone();
        self.changing(std::slice::from_ref(&key), |live| live.add_endpoint_now(ep))
    }

    fn add_endpoint_now(&mut self, ep: Endpoint) -> Result<Applied, LiveError> {
        if self.at.contains_key(&ep.key) {
            return self.replace_endpoint_now(ep);
        }
        if self.try_add(&ep) {
            self.put_endpoint(Arc::new(ep));
            return Ok(Applied::Fast);
        }
        let key = ep.key.clone();
        self.put_endpoint(Arc::new(ep));
        self.rebuild().inspect_err(|_| {
            self.take_endpoint(&key);
        })
    }

    /// Removes the endpoint with this key.
    pub fn remove_endpoint(&mut self, key: &ResourceKey) -> Result<Applied, LiveError> {
        self.changing(std::slice::from_ref(key), |live| {
            live.remove_endpoint_now(key)
        })
    }

    fn remove_endpoint_now(&mut self, key: &ResourceKey) -> Result<Applied, LiveError> {
        let ep = self
            .at
            .get(key)
            .and_then(|&i| self.cluster.endpoints.get(i))
            .cloned()
            .ok_or_else(|| LiveError::UnknownEndpoint(key.clone()))?;
        if self.try_remove(&ep) {
            self.take_endpoint(key);
            return Ok(Applied::Fast);
        }
        let taken = self.take_endpoint(key);
        self.rebuild().inspect_err(|_| {
            if let Some((e, how)) = taken {
                self.untake(e, how);
            }
        })
    }

    /// Replaces the endpoint with `ep`'s key (a relabel, a move): removed, then added;
    /// it keeps its place in the store.
    pub fn replace_endpoint(&mut self, ep: Endpoint) -> Result<Applied, LiveError> {
        let key = ep.key.clone();
        self.changing(std::slice::from_ref(&key), |live| {
            live.replace_endpoint_now(ep)
        })
    }

    fn replace_endpoint_now(&mut self, ep: Endpoint) -> Result<Applied, LiveError> {
        let i = *self
            .at
            .get(&ep.key)
            .ok_or_else(|| LiveError::UnknownEndpoint(ep.key.clone()))?;
        let old = self.cluster.endpoints[i].clone();
        if self.try_remove(&old) {
            let fast = self.try_add(&ep);
            self.cluster.endpoints[i] = Arc::new(ep);
            return if fast {
                Ok(Applied::Fast)
            } else {
                self.rebuild()
            };
        }
        self.cluster.endpoints[i] = Arc::new(ep);
        self.rebuild().inspect_err(|_| {
            self.cluster.endpoints[i] = old.clone();
        })
    }

    /// Whether [`Live::try_add`] would take `ep` to [`Live::try_add_class`] by its
    /// behaviour (no group, no peer class, read as a peer): when the store lags, that
    /// add is refused. (With a group whose hosts lie in other zones it may get there
    /// too; not counted, so that add is tried and refused as before.) `false` whenever
    /// the changes' removals could change the answer.
    fn takes_new_class(&mut self, ep: &Endpoint) -> bool {
        // An address some endpoint has now (one removed by the same change, say) makes
        // `peer_like` answer differently once the removals are through: tried as before.
        if ep.nets.is_empty()
            || !ep.nets.iter().all(is_host)
            || ep.nets.iter().any(|n| self.nets.contains_key(&n.trunc()))
        {
            return false;
        }
        let key = self.behaviour(ep);
        !self.groups.contains_key(&key)
            && (self.peer_like(ep, &key).is_none() || self.first_lowering_reads(ep, &key))
            && ep.kind == EndpointKind::Workload
            && self.reads_as_peer(&key, ep)
    }

    /// The fast path of an add; on success the classifier, names and indexes are
    /// updated (the caller appends the endpoint to the store).
    fn try_add(&mut self, ep: &Endpoint) -> bool {
        self.refresh();
        if ep.nets.is_empty() || !ep.nets.iter().all(is_host) {
            return false;
        }
        let key = self.behaviour(ep);
        let Some(group) = self.groups.get(&key) else {
            return self.try_add_new(ep, key);
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
            // The new host and the exemplar must lie in the same rule CIDRs and
            // network-set prefixes (one zone): a rule's selector intersected with a
            // CIDR lowers to the selected hosts inside it, so the CIDR itself is not
            // in that list and its class does not tell the two apart.
            let zone = self.named.zone(&n);
            let named = &self.named;
            let Some(like) = group
                .hosts
                .iter()
                .filter(|h| {
                    matches!(
                        (h, &n),
                        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
                    )
                })
                .take(16)
                .find(|h| named.zone(h) == zone)
            else {
                return next.is_none() && self.try_add_new(ep, key);
            };
            let from = next.as_ref().unwrap_or(&self.classifier);
            match from.with_host(n, EndpointId(id), group.ingress, group.egress, *like) {
                Ok(c) => next = Some(c),
                Err(_) => return false,
            }
        }
        let Some(next) = next else { return false };
        let programs = (group.ingress, group.egress);
        self.join(ep, id, next, key, programs)
    }

    /// Publishes `next`, the generation with `ep` bound as endpoint `id`: its
    /// addresses are owned by it in [`Names`], and it joins its behaviour's group
    /// (started with `programs` if there is none). `false` when the owner index
    /// cannot take its addresses.
    fn join(
        &mut self,
        ep: &Endpoint,
        id: u32,
        next: IdentityClassifier,
        key: Behaviour,
        (ingress, egress): (Option<ProgramId>, Option<ProgramId>),
    ) -> bool {
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
        let hosts: Vec<IpNet> = ep.nets.iter().map(|n| n.trunc()).collect();
        for n in &hosts {
            *self.nets.entry(*n).or_insert(0) += 1;
        }
        self.groups
            .entry(key)
            .or_insert(Group {
                hosts: Vec::new(),
                ingress,
                egress,
            })
            .hosts
            .extend(hosts);
        true
    }

    /// An add whose behaviour has no exemplar: as a peer class that exists
    /// ([`Live::try_add_peer`]), else as a host no rule reads
    /// ([`Live::try_add_unlisted`]).
    fn try_add_new(&mut self, ep: &Endpoint, key: Behaviour) -> bool {
        match self.peer_like(ep, &key) {
            Some(like) if !self.first_lowering_reads(ep, &key) => self.try_add_peer(ep, key, like),
            _ if ep.kind == EndpointKind::Workload && self.reads_as_peer(&key, ep) => {
                self.try_add_class(ep, key)
            }
            _ => self.try_add_unlisted(ep, key),
        }
    }

    /// The policies whose rules read an endpoint of peer key `peer` defining the
    /// ports of `ep` (indices into the store's policies, ascending): those with a
    /// rule side whose positive selector or `notSelector` the key says matches, or
    /// that name one of its ports on a side without a positive selector. `None` when
    /// a profile's rules read it.
    fn policies_reading(&self, peer: &PeerKey, ep: &Endpoint) -> Option<Vec<u32>> {
        let mut out = Vec::new();
        for (w, &bits) in peer.reads.iter().enumerate() {
            let mut bits = bits;
            while bits != 0 {
                let k = (w * 64 + bits.trailing_zeros() as usize) / 2;
                bits &= bits - 1;
                let r = self.side_readers.get(k)?;
                if r.profile {
                    return None;
                }
                out.extend_from_slice(&r.policies);
            }
        }
        for p in &ep.ports {
            if let Some(r) = self.port_readers.get(&p.name) {
                if r.profile {
                    return None;
                }
                out.extend_from_slice(&r.policies);
            }
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// The policies whose rules read a host of peer key `peer` otherwise than one of
    /// peer key `like` (of the same kind), ascending: those with a rule side one key
    /// says matches and the other does not, and those naming a port the two define
    /// differently (in `ports` or `notPorts` of any side). `None` when a profile's
    /// rules are among them or there are more than `limit`. `seen` is a cleared
    /// bitset of the store's policies, left cleared.
    fn policies_reading_unlike(
        &self,
        peer: &PeerKey,
        like: &PeerKey,
        limit: usize,
        seen: &mut [u64],
    ) -> Option<Vec<u32>> {
        let mut out = Vec::new();
        // Adds `r`'s policies; false for a profile or past the limit.
        let mut add = |r: &Readers, out: &mut Vec<u32>| {
            if r.profile {
                return false;
            }
            for &p in &r.policies {
                let (w, b) = (p as usize / 64, p % 64);
                if let Some(x) = seen.get_mut(w)
                    && *x >> b & 1 == 0
                {
                    *x |= 1 << b;
                    out.push(p);
                    if out.len() > limit {
                        return false;
                    }
                }
            }
            true
        };
        let mut ok = true;
        if peer.ports != like.ports {
            let differ = peer
                .ports
                .iter()
                .filter(|p| !like.ports.contains(p))
                .chain(like.ports.iter().filter(|p| !peer.ports.contains(p)));
            for p in differ {
                if let Some(r) = self.named_port_readers.get(&p.0)
                    && !add(r, &mut out)
                {
                    ok = false;
                    break;
                }
            }
        }
        'sides: for (w, (&a, &b)) in peer.reads.iter().zip(&like.reads).enumerate() {
            let mut bits = a ^ b;
            while ok && bits != 0 {
                let k = (w * 64 + bits.trailing_zeros() as usize) / 2;
                bits &= bits - 1;
                match self.side_readers.get(k) {
                    Some(r) if add(r, &mut out) => {}
                    _ => {
                        ok = false;
                        break 'sides;
                    }
                }
            }
        }
        for &p in &out {
            if let Some(x) = seen.get_mut(p as usize / 64) {
                *x &= !(1 << (p % 64));
            }
        }
        if !ok {
            return None;
        }
        out.sort_unstable();
        Some(out)
    }

    /// How a host `h` of `ep` (of behaviour `key`, a peer class no bound host and no
    /// spare has in `h`'s zone) gets an identity of its own: the *template* it is
    /// split from ([`IdentityClassifier::with_new_host_identity`]: every kept tree
    /// reads the host as it reads the template) and the policies whose rules must
    /// tell the two apart (lowered again: [`Live::policies_reading_unlike`]). The
    /// template is the bound host or spare of `h`'s zone and kind, with free ids,
    /// that the fewest policies read otherwise, or the prefixes containing `h`
    /// (`None`: every policy reading the host, [`Live::policies_reading`]) when none
    /// is read otherwise by fewer. `None` when every choice has a profile among them.
    fn split_plan(
        &self,
        ep: &Endpoint,
        key: &Behaviour,
        h: &IpNet,
    ) -> Option<(Vec<u32>, Option<HostIdentity>)> {
        let (peer, zone) = self.peer_entry(&self.peer_keys(key), h);
        let f = usize::from(matches!(h, IpNet::V6(_)));
        let mut best = self.policies_reading(&peer, ep).map(|r| (r, None));
        // One policy is as few as a class of its own can take (the same key is no new
        // class).
        if best.as_ref().is_some_and(|(b, _)| b.len() <= 1) {
            return best;
        }
        let mut seen = vec![0u64; self.cluster.policies.len().div_ceil(64)];
        for ((k, z), like) in &self.peers {
            let Some(like) = like[f] else { continue };
            if *z != zone
                || !self.classifier.splits(&like)
                || k.kind != peer.kind
                || k.reads.len() != peer.reads.len()
            {
                continue;
            }
            // Fewer than the best so far, and within what the path takes.
            let limit = best.as_ref().map_or(NEW_CLASS_POLICIES, |(b, _)| {
                b.len().min(NEW_CLASS_POLICIES + 1) - 1
            });
            if let Some(readers) = self.policies_reading_unlike(&peer, k, limit, &mut seen) {
                let done = readers.len() <= 1;
                best = Some((readers, Some(like)));
                if done {
                    break;
                }
            }
        }
        best
    }

    /// The groups whose programs hold one of the policies `readers` (indices), each
    /// with one of its endpoints (their programs are lowered again for it); `None`
    /// when a group's first host is no endpoint of the store.
    fn affected_groups(&self, readers: &[u32]) -> Option<Vec<(Behaviour, Arc<Endpoint>)>> {
        let bit = |b: &Behaviour, i: u32| {
            b.selects
                .get(i as usize / 64)
                .is_some_and(|w| w >> (i % 64) & 1 == 1)
        };
        let mut affected: Vec<(Behaviour, Arc<Endpoint>)> = Vec::new();
        for (b, g) in &self.groups {
            let hit = readers.iter().any(|&i| {
                let p = &self.cluster.policies[i as usize];
                let sel = self.applies[i as usize];
                [PolicyType::Ingress, PolicyType::Egress]
                    .into_iter()
                    .any(|d| Cluster::policy_applies_by(p, d, |_| bit(b, sel)))
            });
            if !hit {
                continue;
            }
            let owner = g
                .hosts
                .first()
                .and_then(|h| self.classifier.binding(*h))
                .and_then(|(id, _, _)| self.names.endpoint(id))
                .and_then(|n| self.at.get(&n.key))
                .and_then(|&i| self.cluster.endpoints.get(i))?;
            affected.push((b.clone(), owner.clone()));
        }
        Some(affected)
    }

    /// The fast path of an add of a workload endpoint whose peer class no bound host
    /// and no spare has in its zone, at host prefixes that no rule, network set or
    /// endpoint names or contains: each host gets an identity of its own split from
    /// a template ([`Live::split_plan`], [`IdentityClassifier::with_new_host_identity`]:
    /// read as the template until the programs that tell them apart are rebuilt), the
    /// policies whose rules read it otherwise than its template (at most
    /// [`NEW_CLASS_POLICIES`]) are lowered again over the store with it, and the
    /// programs of the endpoints they apply to (and its own) get their trees as a new
    /// part, those policies' address lists fresh (resolved to the identities in them
    /// now, the new one included: [`IdentityClassifier::with_programs`]). Every other
    /// program's lists hold the host exactly when they hold its template. On success
    /// the endpoint starts its behaviour's group and its peer class is indexed. On a
    /// failure after lowering the memo is dropped (a rebuild makes a new one).
    fn try_add_class(&mut self, ep: &Endpoint, key: Behaviour) -> bool {
        if self.memo.is_none()
            || self.store_lags
            || self.classifier.stats().parts >= MAX_PARTS
            // Every endpoint prefix a host prefix of one endpoint: a binding's programs
            // are then its endpoint's, and every bound host is in a group.
            || !self.wide.is_empty()
            || self.nets.values().any(|&c| c != 1)
        {
            return false;
        }
        let hosts: Vec<IpNet> = ep.nets.iter().map(IpNet::trunc).collect();
        for n in &hosts {
            if !is_host(n) || self.nets.contains_key(n) || self.named.contains(n) {
                return false;
            }
        }
        // Each host split from the template that leaves the fewest policies to lower
        // again (with no wider endpoint prefix, checked above).
        let mut readers: Vec<u32> = Vec::new();
        let mut templates: Vec<Option<HostIdentity>> = Vec::with_capacity(hosts.len());
        for n in &hosts {
            let Some((r, like)) = self.split_plan(ep, &key, n) else {
                return false;
            };
            readers.extend(r);
            templates.push(like);
        }
        readers.sort_unstable();
        readers.dedup();
        if readers.len() > NEW_CLASS_POLICIES {
            return false;
        }
        // The groups whose programs hold one of those policies, each with one of its
        // endpoints (their programs are lowered again for it).
        let Some(mut affected) = self.affected_groups(&readers) else {
            return false;
        };
        let Ok(id) = id32("endpoints", self.names.endpoints.len()) else {
            return false;
        };
        let mut bound: Option<IdentityClassifier> = None;
        for (n, like) in hosts.iter().zip(templates) {
            let from = bound.as_ref().unwrap_or(&self.classifier);
            match from.with_new_host_identity(*n, EndpointId(id), None, None, like) {
                Ok(c) => bound = Some(c),
                Err(_) => return false,
            }
        }
        let Some(bound) = bound else { return false };
        let Some(mut memo) = self.memo.take() else {
            return false;
        };
        let this = Arc::new(ep.clone());
        // The endpoint's own programs: those of a group whose applies-to selectors and
        // profiles read it as it (the same skeletons), if any.
        let mut mask = vec![0u64; key.selects.len()];
        for &i in &self.applies {
            if let Some(w) = mask.get_mut(i as usize / 64) {
                *w |= 1 << (i % 64);
            }
        }
        let same_policies = |b: &Behaviour| {
            b.profiles == key.profiles
                && b.selects.len() == key.selects.len()
                && b.selects
                    .iter()
                    .zip(&key.selects)
                    .zip(&mask)
                    .all(|((x, y), m)| (x ^ y) & m == 0)
        };
        let own = self
            .groups
            .iter()
            .filter(|(b, _)| same_policies(b))
            .find_map(|(_, g)| Some((g.ingress?, g.egress?)));
        // Lowered in rounds: a round whose fresh lists include one the classifier
        // knows in a form that no longer describes it (`StaleLists`) lowers again, in
        // the next, the policies whose memo still names a list of that content (its
        // old sense), so that every policy naming it names it as exactly its addresses
        // now, and the classifier forgets the old form. With reused pod addresses that
        // is required: a pod P removed on the fast path leaves its address A in the
        // memo's lists of the policies not lowered since (`app == 'db'` still lowers
        // to `[A]`, known as P's identity, which no address has any more: it selects
        // nothing, rightly), and the new pod's readers lowered again can give a list
        // of the same content (`has(canary)` → `[A]`, which must hold the new
        // identity); `app == 'db'` lowered again gives `[]`. The same when a reader's
        // side reads a bound template and not the host: its list keeps its addresses,
        // whose known form holds the host's new id with the template's, as a kept
        // policy naming that list needs; lowered again, that policy's list holds the
        // host. Programs of a round the next one replaces get trees but no binding
        // (dropped at the next merge of their part).
        let mut added: Vec<Program> = Vec::new();
        let mut lowered: Vec<(PolicyId, ResourceKey)> = Vec::new();
        let mut forgotten: Vec<Nets> = Vec::new();
        let mut round = 0;
        // The spares, lowered with the store as the build lowers them: their hosts
        // are ghosts in the classifier, so the lists lowered again hold their
        // identities where they hold their addresses (the spares a list holds
        // otherwise than their identities are dropped after).
        let spare_eps: Vec<Arc<Endpoint>> =
            self.spares.iter().map(|s| s.endpoint.clone()).collect();
        if self.spare_behaviours.len() != self.spares.len() {
            self.spare_behaviours = spare_eps.iter().map(|e| self.behaviour(e)).collect();
        }
        let spare_b = std::mem::take(&mut self.spare_behaviours);
        // The slow twin: the kept behaviours are the spares' now.
        #[cfg(test)]
        assert!(
            spare_eps
                .iter()
                .zip(&spare_b)
                .all(|(e, b)| self.behaviour(e) == *b),
            "a kept spare behaviour is out of date"
        );
        let spare_hosts: Vec<Vec<IpNet>> = spare_eps
            .iter()
            .map(|e| e.nets.iter().map(IpNet::trunc).collect())
            .collect();
        let (next, dropped, programs, ingress, egress, split) = loop {
            let keys: Vec<ResourceKey> = readers
                .iter()
                .map(|&i| self.cluster.policies[i as usize].key.clone())
                .collect();
            // The affected endpoints' policies are what they were (an endpoint added
            // changes no applies-to): their programs are reassembled from the skeletons of
            // their groups' programs.
            let mut endpoints: Vec<(&Endpoint, Option<(ProgramId, ProgramId)>)> = affected
                .iter()
                .map(|(b, e)| {
                    let was = self
                        .groups
                        .get(b)
                        .and_then(|g| Some((g.ingress?, g.egress?)));
                    (&**e, was)
                })
                .collect();
            endpoints.push((&this, own));
            // Lowered over the store with the endpoint in it, in place of the one with its
            // key if any (a relabel: that one is unbound already); the store is put back
            // at once (the caller puts the endpoint in on success).
            let at = self.at.get(&ep.key).copied();
            let old = match at {
                Some(i) => Some(std::mem::replace(
                    &mut self.cluster.endpoints[i],
                    this.clone(),
                )),
                None => {
                    self.cluster.endpoints.push(this.clone());
                    None
                }
            };
            let real = self.cluster.endpoints.len();
            self.cluster.endpoints.extend(spare_eps.iter().cloned());
            // Every endpoint with addresses is in a group (the checks above), the new one
            // and the spares aside: the selectors and named ports of the policies
            // lowered again are resolved from the groups' selector bits.
            let mut groups: Vec<PeerGroup<'_>> = self
                .groups
                .iter()
                .map(|(b, g)| PeerGroup {
                    selects: &b.selects,
                    ports: &b.ports,
                    nets: &g.hosts,
                })
                .collect();
            groups.push(PeerGroup {
                selects: &key.selects,
                ports: &ep.ports,
                nets: &hosts,
            });
            for ((b, e), h) in spare_b.iter().zip(&spare_eps).zip(&spare_hosts) {
                groups.push(PeerGroup {
                    selects: &b.selects,
                    ports: &e.ports,
                    nets: h,
                });
            }
            let peers = PeerIndex {
                numbers: &self.selector_numbers,
                groups,
            };
            #[cfg(test)]
            {
                let copy = PeerIndex {
                    numbers: peers.numbers,
                    groups: peers
                        .groups
                        .iter()
                        .map(|g| PeerGroup {
                            selects: g.selects,
                            ports: g.ports,
                            nets: g.nets,
                        })
                        .collect(),
                };
                let mut ports: Vec<&str> = self.port_readers.keys().map(String::as_str).collect();
                ports.extend(ep.ports.iter().map(|p| p.name.as_str()));
                assert!(
                    super::peer_index_agrees(&self.cluster, copy, &self.selectors, &ports),
                    "the peer index resolves a selector or named port as the scan does not"
                );
            }
            let programs = super::relower_policies(
                &self.cluster,
                &mut self.names,
                &mut memo,
                &keys,
                &endpoints,
                Some(peers),
                // The index's, of this store's policies (an add changes none).
                Some(&self.applies),
            );
            self.cluster.endpoints.truncate(real);
            match (at, old) {
                (Some(i), Some(old)) => self.cluster.endpoints[i] = old,
                _ => {
                    self.cluster.endpoints.pop();
                }
            }
            let Ok(programs) = programs else { return false };
            let Some(&(ingress, egress)) = programs.last() else {
                return false;
            };
            added.extend(memo.take_programs());
            // The readers, and the policies and profiles of the endpoint's own programs
            // lowered for the first time since the build (over the store with it and
            // the spares: their lists hold both), are fresh.
            lowered.extend(memo.take_lowered());
            lowered.sort_unstable_by_key(|(id, _)| *id);
            lowered.dedup_by_key(|(id, _)| *id);
            let mut rebind: Vec<(IpNet, Option<ProgramId>, Option<ProgramId>)> = Vec::new();
            for ((b, _), &(i, e)) in affected.iter().zip(&programs) {
                if let Some(g) = self.groups.get(b) {
                    rebind.extend(g.hosts.iter().map(|h| (*h, Some(i), Some(e))));
                }
            }
            rebind.extend(hosts.iter().map(|n| (*n, Some(ingress), Some(egress))));
            let mut ids: Vec<_> = keys.iter().filter_map(|k| memo.policy(k)).collect();
            ids.extend(lowered.iter().map(|(id, _)| *id));
            ids.sort_unstable();
            ids.dedup();
            let fresh = memo.lists_of(&ids);
            let forgot;
            let from = if forgotten.is_empty() {
                &bound
            } else {
                forgot = bound.forgetting_lists(&forgotten);
                &forgot
            };
            let stale = match from.resolve_fresh(&fresh) {
                Ok(f) => {
                    // The spares the lists hold otherwise than their identities.
                    let split = f.split_ghosts().to_vec();
                    match add_fresh(from, added, f, &rebind, &[], &self.cfg) {
                        Ok((next, dropped)) => {
                            break (next, dropped, programs, ingress, egress, split);
                        }
                        Err(_) => return false,
                    }
                }
                Err(ProgramChangeRefused::StaleLists(stale)) => stale,
                Err(_) => return false,
            };
            // The next round: the lists forgotten, the policies still naming one in
            // its old sense lowered again too (policies only: a profile's programs
            // are every endpoint's), and the programs naming one numbered anew (the
            // readers lowered again give the same rules, which must not be taken for
            // the programs built with the old form).
            round += 1;
            let stale: Vec<Nets> = stale.iter().map(|&i| fresh[i].clone()).collect();
            for id in memo.naming(&stale) {
                if ids.binary_search(&id).is_ok() {
                    continue;
                }
                let Some(k) = memo.policy_key(id) else {
                    return false;
                };
                match self.cluster.policies.binary_search_by(|p| p.key.cmp(k)) {
                    Ok(i) => readers.push(i as u32),
                    Err(_) => return false,
                }
            }
            readers.sort_unstable();
            readers.dedup();
            if round > STALE_ROUNDS || readers.len() > NEW_CLASS_POLICIES {
                return false;
            }
            memo.renumber_programs_naming(&stale);
            forgotten.extend(stale);
            match self.affected_groups(&readers) {
                Some(a) => affected = a,
                None => return false,
            }
        };
        self.spare_behaviours = spare_b;
        // The policies lowered again in this change (their peer classes are checked
        // against the identities the lists can hold: `forget_unreached_peers`).
        let (mut read, profiles) = self.policy_indices(lowered.iter().map(|(_, k)| k));
        read.extend_from_slice(&readers);
        read.sort_unstable();
        read.dedup();
        memo.drop_programs(&dropped);
        let keys = self.peer_keys(&key);
        if !self.join(ep, id, next, key, (Some(ingress), Some(egress))) {
            return false;
        }
        for ((b, _), &(i, e)) in affected.iter().zip(&programs) {
            if let Some(g) = self.groups.get_mut(b) {
                g.ingress = Some(i);
                g.egress = Some(e);
            }
        }
        self.memo = Some(memo);
        self.forget_unreached_peers(&read, profiles, &split);
        for n in &hosts {
            let f = usize::from(matches!(n, IpNet::V6(_)));
            let like = self.classifier.host_identity(*n);
            let slot = self
                .peers
                .entry(self.peer_entry(&keys, n))
                .or_insert([None, None]);
            if slot[f].is_none() {
                slot[f] = like;
            }
        }
        true
    }

    /// What the policies `readers` (indices, ascending), and every profile if
    /// `profiles`, read of a peer: the bits of a peer key for their rule sides, and
    /// the port names they name on a side without a positive selector.
    fn read_by(&self, readers: &[u32], profiles: bool) -> (Vec<u64>, HashSet<String>) {
        let hit = |r: &Readers| {
            profiles && r.profile || r.policies.iter().any(|p| readers.binary_search(p).is_ok())
        };
        let mut mask = vec![0u64; (2 * self.sides.len()).div_ceil(64)];
        for (k, r) in self.side_readers.iter().enumerate() {
            if hit(r) {
                mask[2 * k / 64] |= 1 << (2 * k % 64);
                mask[(2 * k + 1) / 64] |= 1 << ((2 * k + 1) % 64);
            }
        }
        let names = self
            .port_readers
            .iter()
            .filter(|(_, r)| hit(r))
            .map(|(n, _)| n.clone())
            .collect();
        (mask, names)
    }

    /// Drops the peer classes whose identity may be missing from the lists the
    /// policies `readers` (indices) were just lowered to: a list lowered again is
    /// resolved to the identities of bound hosts only, so a spare's identity (or a
    /// removed exemplar's) is no longer in it. Dropped: every class a rule side of
    /// those policies reads, or with a port name one of them names on a side without
    /// a positive selector (from the index and, for spares, from `spares`). With
    /// `profiles`, every profile counts as lowered again too.
    fn forget_peers(&mut self, readers: &[u32], profiles: bool) {
        let (mask, names) = self.read_by(readers, profiles);
        self.peers
            .retain(|(key, _), _| !peer_read(key, &mask, &names));
        self.keep_spares(readers, profiles);
    }

    /// After a change that lowered the policies `readers` (indices; every profile too
    /// with `profiles`) again with the spares in the store, their hosts ghosts in the
    /// classifier ([`Live::try_add_class`]): the lists hold a spare's identity where
    /// they hold its address, but for the spares whose hosts are in `split` (held
    /// otherwise than their identities), dropped. A peer class those policies read
    /// is dropped from the index when its identity is neither a live class's (a
    /// list holds such an identity whole or not at all, as its classes) nor a kept
    /// spare's: a removed exemplar's is in no list lowered again.
    fn forget_unreached_peers(&mut self, readers: &[u32], profiles: bool, split: &[IpNet]) {
        if !split.is_empty() {
            let out = |s: &Spare| s.endpoint.nets.iter().any(|n| split.contains(&n.trunc()));
            if self.spare_keys.len() == self.spares.len() {
                let (spares, keys): (Vec<Spare>, Vec<PeerKey>) = std::mem::take(&mut self.spares)
                    .into_iter()
                    .zip(std::mem::take(&mut self.spare_keys))
                    .filter(|(s, _)| !out(s))
                    .unzip();
                self.spares = spares;
                self.spare_keys = keys;
            } else {
                self.spares.retain(|s| !out(s));
                // Out of step already: made again from the spares when next needed.
                self.spare_keys.clear();
            }
            self.spare_behaviours.clear();
        }
        let (mask, names) = self.read_by(readers, profiles);
        if !self
            .peers
            .keys()
            .any(|(key, _)| peer_read(key, &mask, &names))
        {
            return;
        }
        let live = self.classifier.live_identities();
        let kept: HashSet<(bool, u32)> = self
            .spares
            .iter()
            .flat_map(|s| s.like.iter().flatten().map(HostIdentity::id))
            .collect();
        self.peers.retain(|(key, _), slot| {
            !peer_read(key, &mask, &names)
                || slot
                    .iter()
                    .flatten()
                    .all(|h| live.binary_search(&h.id()).is_ok() || kept.contains(&h.id()))
        });
    }

    /// Drops from `spares` those whose class the policies `readers` (indices into the
    /// store's policies, ascending; lowered again, their lists resolved to bound
    /// hosts only) read: by a rule side or a port name as [`Live::forget_peers`]
    /// says, or by a CIDR (`nets`, `notNets`) containing one of the spare's hosts.
    /// With `profiles`, by every profile's rules too.
    fn keep_spares(&mut self, readers: &[u32], profiles: bool) {
        if readers.is_empty() && !profiles || self.spares.is_empty() {
            return;
        }
        let (mask, names) = self.read_by(readers, profiles);
        let profile_rules = self
            .cluster
            .profiles
            .values()
            .filter(|_| profiles)
            .flat_map(|p| p.ingress.iter().chain(&p.egress));
        let cidrs: Vec<IpNet> = readers
            .iter()
            .filter_map(|&i| self.cluster.policies.get(i as usize))
            .flat_map(|p| p.ingress.iter().chain(&p.egress))
            .chain(profile_rules)
            .flat_map(|r| [&r.source, &r.destination])
            .flat_map(|m| m.nets.iter().chain(&m.not_nets))
            .copied()
            .collect();
        // The keys `index_peers` computed, unless the indexes changed since.
        if self.spare_keys.len() != self.spares.len() {
            let spares = std::mem::take(&mut self.spares);
            self.spare_keys = spares
                .iter()
                .map(|s| {
                    let b = self.behaviour(&s.endpoint);
                    self.spare_key(&s.endpoint, &b)
                })
                .collect();
            self.spares = spares;
        }
        let (mut spares, mut keys) = (Vec::new(), Vec::new());
        for (s, key) in std::mem::take(&mut self.spares)
            .into_iter()
            .zip(std::mem::take(&mut self.spare_keys))
        {
            let read = peer_read(&key, &mask, &names)
                || s.endpoint
                    .nets
                    .iter()
                    .any(|n| cidrs.iter().any(|c| c.contains(n)));
            if !read {
                spares.push(s);
                keys.push(key);
            }
        }
        if spares.len() != self.spare_behaviours.len() {
            self.spare_behaviours.clear();
        }
        self.spares = spares;
        self.spare_keys = keys;
    }

    /// How `ep`'s hosts are classified, per family, if for each of them a bound host
    /// or a spare has its peer key and its zone (the named prefixes containing it),
    /// and every host of `ep` is a new host prefix.
    fn peer_like(&self, ep: &Endpoint, key: &Behaviour) -> Option<[Option<HostIdentity>; 2]> {
        if ep.kind != EndpointKind::Workload || self.memo.is_none() {
            return None;
        }
        let peers = self.peer_keys(key);
        let mut like = [None, None];
        for n in &ep.nets {
            let n = n.trunc();
            if !is_host(&n) || self.nets.contains_key(&n) || self.named.contains(&n) {
                return None;
            }
            let f = usize::from(matches!(n, IpNet::V6(_)));
            let l = self.peers.get(&self.peer_entry(&peers, &n))?[f]?;
            // Two addresses of one family in zones of different identities: the
            // caller binds one identity per family.
            if like[f].is_some_and(|o| o != l) {
                return None;
            }
            like[f] = Some(l);
        }
        Some(like)
    }

    /// The fast path of an add whose behaviour no bound endpoint has but whose peer
    /// key one has (or a spare of the build): its hosts take that identity
    /// ([`IdentityClassifier::with_host_identity`]), so every rule reads them as it
    /// reads that host; its own programs are lowered from the memo and those not
    /// seen before get their trees as a new part. On success the endpoint starts its
    /// behaviour's group. On a failure after lowering the memo is dropped (a rebuild
    /// makes a new one).
    fn try_add_peer(
        &mut self,
        ep: &Endpoint,
        key: Behaviour,
        like: [Option<HostIdentity>; 2],
    ) -> bool {
        self.add_with_own_programs(ep, key, |from, n, id, ingress, egress| {
            let l = like[usize::from(matches!(n, IpNet::V6(_)))]?;
            from.with_host_identity(n, id, Some(ingress), Some(egress), l)
                .ok()
        })
    }

    /// The tail both fast paths of a new behaviour share: lowers `ep`'s own programs
    /// from the memo (those not seen before get their trees as a new part), binds each
    /// of its host prefixes with `bind` (the classifier so far, the prefix, the
    /// endpoint id, its ingress and egress programs) and joins its behaviour's group.
    /// On a failure after lowering the memo is dropped (a rebuild makes a new one).
    fn add_with_own_programs(
        &mut self,
        ep: &Endpoint,
        key: Behaviour,
        bind: impl Fn(
            &IdentityClassifier,
            IpNet,
            EndpointId,
            ProgramId,
            ProgramId,
        ) -> Option<IdentityClassifier>,
    ) -> bool {
        let Ok(id) = id32("endpoints", self.names.endpoints.len()) else {
            return false;
        };
        let Some(mut memo) = self.memo.take() else {
            return false;
        };
        let Ok(programs) = super::relower_policies(
            &self.cluster,
            &mut self.names,
            &mut memo,
            &[],
            &[(ep, None)],
            None,
            None,
        ) else {
            return false;
        };
        let Some(&(ingress, egress)) = programs.first() else {
            return false;
        };
        let added = memo.take_programs();
        // Lowered for the first time since the build, over the store without `ep`:
        // those lists hold no spare, and none reads `ep` (`Live::first_lowering_reads`
        // for a peer's identity; no rule for an unlisted host), so they are fresh
        // (resolved to the identities in them now).
        let lowered = memo.take_lowered();
        let with_trees = if added.is_empty() {
            None
        } else {
            // The endpoint's programs may be ones the memo had, in the last part and
            // bound by no host since the endpoint's old self left (a relabel): kept.
            let ids: Vec<PolicyId> = lowered.iter().map(|(id, _)| *id).collect();
            let fresh = memo.lists_of(&ids);
            match add_programs(
                &self.classifier,
                added,
                &fresh,
                &[],
                &[ingress, egress],
                &self.cfg,
            ) {
                Ok((c, dropped)) => {
                    memo.drop_programs(&dropped);
                    Some(c)
                }
                Err(_) => return false,
            }
        };
        let mut next: Option<IdentityClassifier> = None;
        for n in &ep.nets {
            let from = next
                .as_ref()
                .or(with_trees.as_ref())
                .unwrap_or(&self.classifier);
            match bind(from, n.trunc(), EndpointId(id), ingress, egress) {
                Some(c) => next = Some(c),
                None => return false,
            }
        }
        let Some(next) = next else { return false };
        if !self.join(ep, id, next, key, (Some(ingress), Some(egress))) {
            return false;
        }
        self.memo = Some(memo);
        let (read, profiles) = self.policy_indices(lowered.iter().map(|(_, k)| k));
        if !read.is_empty() || profiles {
            self.forget_peers(&read, profiles);
        }
        true
    }

    /// The store's indices (ascending, once each) of the policies among `keys`, and
    /// whether a profile is among them.
    fn policy_indices<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k ResourceKey>,
    ) -> (Vec<u32>, bool) {
        let mut profiles = false;
        let mut out: Vec<u32> = keys
            .into_iter()
            .filter_map(|k| {
                profiles |= k.kind == Kind::Profile;
                self.cluster
                    .policies
                    .binary_search_by(|p| p.key.cmp(k))
                    .ok()
            })
            .map(|i| i as u32)
            .collect();
        out.sort_unstable();
        out.dedup();
        (out, profiles)
    }

    /// Whether lowering `ep`'s own programs (`ep` of behaviour `key`) would lower for
    /// the first time since the build the rules of a policy that reads `ep` as a
    /// peer (a rule side matching it, a port name it defines on a side without a
    /// selector), or of a profile: lowered over a store without the spares, their
    /// lists hold a spare's identity only through the bound hosts that have it, so a
    /// pod may not take a spare's identity then ([`Live::try_add_peer`]); it gets one
    /// of its own, with those lists fresh ([`Live::try_add_class`]).
    fn first_lowering_reads(&self, ep: &Endpoint, key: &Behaviour) -> bool {
        let Some(memo) = &self.memo else { return true };
        if self
            .cluster
            .profiles_for(ep)
            .iter()
            .any(|(name, _)| !memo.has_profile_rules(name))
        {
            return true;
        }
        let bit = |i: u32| {
            key.selects
                .get(i as usize / 64)
                .is_some_and(|w| w >> (i % 64) & 1 == 1)
        };
        let mut first: Vec<u32> = Vec::new();
        for (i, p) in self.cluster.policies.iter().enumerate() {
            let sel = self.applies[i];
            if [PolicyType::Ingress, PolicyType::Egress]
                .into_iter()
                .any(|d| {
                    Cluster::policy_applies_by(p, d, |_| bit(sel))
                        && !memo.has_policy_rules(&p.key, d)
                })
            {
                first.push(i as u32);
            }
        }
        if first.is_empty() {
            return false;
        }
        let (mask, names) = self.read_by(&first, false);
        self.peer_keys(key)
            .iter()
            .any(|k| peer_read(k, &mask, &names))
    }

    /// The fast path of an add whose behaviour no bound endpoint has, for a workload
    /// endpoint no rule reads as a peer ([`Live::reads_as_peer`]). Its address then belongs to no
    /// address list but those containing it by prefix, which is what its prefix's
    /// class already says ([`IdentityClassifier::with_unlisted_host`]); only its own
    /// programs are lowered (from the memo), and those not seen before get their
    /// trees as a new part. Also taken when none of the behaviour's first exemplars
    /// is in the new host's zone. On success the endpoint joins its behaviour's
    /// group (or starts it). On a failure after lowering the memo is dropped (a
    /// rebuild makes a new one).
    fn try_add_unlisted(&mut self, ep: &Endpoint, key: Behaviour) -> bool {
        if ep.kind != EndpointKind::Workload || self.memo.is_none() {
            return false;
        }
        for n in &ep.nets {
            let n = n.trunc();
            if self.named.contains(&n) || self.nets.contains_key(&n) {
                return false;
            }
        }
        let read = self.reads_as_peer(&key, ep);
        #[cfg(debug_assertions)]
        debug_assert_eq!(read, self.read_as_peer(ep), "peer reading of {}", ep.key);
        if read {
            return false;
        }
        self.add_with_own_programs(ep, key, |from, n, id, ingress, egress| {
            from.with_unlisted_host(n, id, Some(ingress), Some(egress))
                .ok()
        })
    }

    /// [`Live::read_as_peer`] from the endpoint's behaviour `b`: a bit of its peer
    /// key, or a port name it defines that a rule side without a peer selector names.
    fn reads_as_peer(&self, b: &Behaviour, ep: &Endpoint) -> bool {
        self.spare_key(ep, b).reads.iter().any(|&w| w != 0)
            || ep
                .ports
                .iter()
                .any(|p| self.port_readers.contains_key(&p.name))
    }

    /// Whether a rule of the store reads `ep` as a peer: its peer selector matches
    /// it, or, without a peer selector, its `notSelector` matches it or it names a
    /// port `ep` defines. The slow twin of [`Live::reads_as_peer`], checked against
    /// it in debug builds.
    #[cfg(debug_assertions)]
    fn read_as_peer(&self, ep: &Endpoint) -> bool {
        let c = &self.cluster;
        let labels = c.endpoint_labels(ep);
        let names_its_port = |ports: &[Port]| {
            ports
                .iter()
                .any(|p| matches!(p, Port::Named(name) if ep.ports.iter().any(|e| e.name == *name)))
        };
        // A prefix containing one of its hosts that may carry a selector's labels.
        let hosts: Vec<IpNet> = ep.nets.iter().map(IpNet::trunc).collect();
        let covered = c
            .network_sets
            .iter()
            .flat_map(|s| &s.nets)
            .chain(
                c.endpoints
                    .iter()
                    .flat_map(|e| &e.nets)
                    .filter(|n| !is_host(n)),
            )
            .any(|p| hosts.iter().any(|h| p.contains(h)));
        // A peer with a positive selector that matches neither `ep` nor a prefix
        // containing it never matches it, whatever its `notSelector` or named ports
        // (named ports resolve on the endpoints that selector matches); one matching
        // such a prefix holds `ep`'s hosts unless its `notSelector` matches `ep`.
        let reads = |m: &crate::cluster::PeerMatch| match &m.selector {
            Some(s) => {
                s.matches(&labels)
                    || covered && m.not_selector.as_ref().is_some_and(|s| s.matches(&labels))
            }
            None => {
                m.not_selector.as_ref().is_some_and(|s| s.matches(&labels))
                    || names_its_port(&m.ports)
                    || names_its_port(&m.not_ports)
            }
        };
        c.every_rule()
            .any(|r| reads(&r.source) || reads(&r.destination))
    }

    /// The fast path of removing endpoint `ep` of the store; on success the
    /// classifier, names and indexes are updated (the caller removes it from the store).
    fn try_remove(&mut self, ep: &Endpoint) -> bool {
        self.refresh();
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
        let key = self.behaviour(ep);
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

/// Where [`Live::take_endpoint`] took an endpoint from.
#[derive(Clone, Copy, Debug)]
enum Taken {
    /// Index `i`; the last endpoint moved there.
    Swapped(usize),
    /// Index `i`; the ones after it moved up.
    Shifted(usize),
}

/// What [`Live::endpoints_fast`] did.
enum Fast {
    /// Every change is applied.
    Done,
    /// Nothing is changed.
    Untouched,
    /// Some changes are applied; this is the state before them.
    Partial(Box<Saved>),
}

/// The fast path's state, kept while several changes are applied.
struct Saved {
    classifier: Arc<IdentityClassifier>,
    names: Names,
    groups: HashMap<Behaviour, Group>,
    nets: HashMap<IpNet, u32>,
}

/// Whether a peer of key `key` is read by what [`Live::read_by`] gave.
fn peer_read(key: &PeerKey, mask: &[u64], names: &HashSet<String>) -> bool {
    key.reads.iter().zip(mask).any(|(a, b)| a & b != 0)
        || key.ports.iter().any(|p| names.contains(&p.0))
}

/// A spare endpoint of a build, and how its hosts were classified (IPv4, IPv6).
#[derive(Clone)]
struct Spare {
    endpoint: Arc<Endpoint>,
    like: [Option<HostIdentity>; 2],
}

/// Most policies whose rules read a new peer class for the endpoint path to lower
/// them again ([`Live::try_add_class`]); with more, the add rebuilds.
const NEW_CLASS_POLICIES: usize = 16;

/// Most rounds of [`Live::try_add_class`] that lower again the policies naming a
/// stale list; each round can add policies whose lists turn out stale in turn.
const STALE_ROUNDS: usize = 3;

/// Spare endpoints a build adds at most. 256 left half the namespaces of the held-out
/// `--seed 7` bench cluster at 20,000 pods (535 shapes) without one, and their new
/// peer classes without a template few policies read otherwise (BENCHMARKS.md, "A
/// new peer class inside rule CIDRs").
const MAX_SPARES: usize = 1024;

/// Endpoints a build lowers beside the store's and then unbinds, so that their
/// identities exist for pods that arrive later with a peer class no endpoint has
/// (see the module doc): per namespace, profiles, named ports, families and zones
/// (per family, the rule CIDRs and network-set prefixes containing the address) of
/// the store's workload endpoints, and each of these without named ports (the most
/// common first, those without ports that no endpoint has after the others, at most
/// [`MAX_SPARES`]), a
/// workload endpoint with only the implicit labels of one of them, at a free address
/// of that zone ([`SpareAddresses`]).
fn spare_endpoints(c: &Cluster) -> Vec<Endpoint> {
    let named = Named::of(c);
    // Per family, the zone of the endpoint's first host of that family.
    type Zones = [Option<Zone>; 2];
    type Shape<'a> = (&'a Option<String>, &'a [String], &'a [EndpointPort], Zones);
    let mut shapes: HashMap<Shape<'_>, (usize, usize)> = HashMap::new();
    for (i, e) in c.endpoints.iter().enumerate() {
        if e.kind != EndpointKind::Workload || e.nets.is_empty() || !e.nets.iter().all(is_host) {
            continue;
        }
        let mut zones: Zones = [None, None];
        for n in &e.nets {
            let f = usize::from(matches!(n, IpNet::V6(_)));
            if zones[f].is_none() {
                zones[f] = Some(named.zone(&n.trunc()));
            }
        }
        // The same shape without named ports (most pods declare none) ranks after
        // every shape an endpoint has.
        if !e.ports.is_empty() {
            shapes
                .entry((&e.key.namespace, &e.profiles, &[], zones.clone()))
                .or_insert((0, i));
        }
        let s = shapes
            .entry((&e.key.namespace, &e.profiles, &e.ports, zones))
            .or_insert((0, i));
        s.0 += 1;
    }
    if shapes.is_empty() {
        return Vec::new();
    }
    // A zone ending in the endpoint's own (named) host prefix has no free address,
    // and a named host never joins a peer class.
    let mut shapes: Vec<(usize, usize, Zones, &[EndpointPort])> = shapes
        .into_iter()
        .filter(|(k, _)| {
            k.3.iter()
                .flatten()
                .all(|z| z.last().is_none_or(|p| !is_host(p)))
        })
        .map(|(k, (n, i))| (n, i, k.3, k.2))
        .collect();
    shapes.sort_unstable_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.3.len().cmp(&b.3.len()))
    });
    shapes.truncate(MAX_SPARES);

    let mut free = SpareAddresses::new(c, &named);
    let mut out = Vec::with_capacity(shapes.len());
    for (k, (_, i, zones, ports)) in shapes.into_iter().enumerate() {
        let t = &c.endpoints[i];
        let mut nets = Vec::new();
        for (f, zone) in zones.iter().enumerate() {
            if let Some(zone) = zone {
                match free.take(f == 1, zone) {
                    Some(n) => nets.push(n),
                    None => break,
                }
            }
        }
        if nets.len() != zones.iter().flatten().count() {
            continue;
        }
        let mut key = t.key.clone();
        // Not a valid Kubernetes name, so no store endpoint has it.
        key.name = format!("~spare-{k}");
        out.push(Endpoint {
            kind: t.kind,
            key,
            nets,
            labels: t
                .labels
                .iter()
                .filter(|(k, _)| k.starts_with("projectcalico.org/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            profiles: t.profiles.clone(),
            ports: ports.to_vec(),
            generate_name: None,
            node: t.node.clone(),
        });
    }
    out
}

/// Free host addresses for spares, each of a given zone: no endpoint, rule or
/// network set has it, no endpoint prefix contains it, and the named prefixes
/// containing it are exactly the zone's. Outside every named prefix the first are in
/// `240.0.0.0/4` and `100::/64` (reserved and discard-only), counting up; otherwise,
/// and when those run out, they are taken counting down from the top of the zone's
/// innermost prefix (of the address space for an empty zone), stepping over the
/// named and endpoint prefixes inside it that would change the zone. Searches are
/// bounded: a zone packed full gets no more spares.
struct SpareAddresses<'a> {
    named: &'a Named,
    /// Host prefixes endpoints, rules and network sets have, and spares taken.
    taken: HashSet<IpNet>,
    /// Endpoint prefixes that are not host prefixes.
    bound: Vec<IpNet>,
    /// Per family, the last address counted up in the reserved range.
    up: [u128; 2],
    /// Per family and zone, where the count down goes on.
    down: HashMap<(bool, Zone), u128>,
}

/// Candidates one search tries at most.
const SPARE_TRIES: usize = 4 * MAX_SPARES;

impl<'a> SpareAddresses<'a> {
    fn new(c: &Cluster, named: &'a Named) -> SpareAddresses<'a> {
        let mut taken: HashSet<IpNet> = named.all.iter().copied().filter(is_host).collect();
        let mut bound = Vec::new();
        for n in c.endpoints.iter().flat_map(|e| &e.nets) {
            let n = n.trunc();
            if is_host(&n) {
                taken.insert(n);
            } else {
                bound.push(n);
            }
        }
        SpareAddresses {
            named,
            taken,
            bound,
            up: [0, 0],
            down: HashMap::new(),
        }
    }

    fn host(six: bool, a: u128) -> IpNet {
        if six {
            IpNet::from(std::net::IpAddr::V6(a.into()))
        } else {
            IpNet::from(std::net::IpAddr::V4((a as u32).into()))
        }
    }

    /// A free host address of family `six` in `zone`, marked taken.
    fn take(&mut self, six: bool, zone: &Zone) -> Option<IpNet> {
        let n = if zone.is_empty() {
            self.count_up(six).or_else(|| self.count_down(six, zone))
        } else {
            self.count_down(six, zone)
        }?;
        self.taken.insert(n);
        Some(n)
    }

    fn count_up(&mut self, six: bool) -> Option<IpNet> {
        let f = usize::from(six);
        let base: u128 = if six { 0x0100 << 112 } else { 0xf000_0000 };
        // Once a search failed the range is full (or named): the next one fails too.
        if self.up[f] >= SPARE_TRIES as u128 {
            return None;
        }
        for _ in 0..SPARE_TRIES {
            self.up[f] += 1;
            let n = Self::host(six, base + self.up[f]);
            if !self.taken.contains(&n)
                && !self.bound.iter().any(|b| b.contains(&n))
                && self.named.zone(&n).is_empty()
            {
                return Some(n);
            }
        }
        self.up[f] = SPARE_TRIES as u128;
        None
    }

    fn count_down(&mut self, six: bool, zone: &Zone) -> Option<IpNet> {
        let (low, high) = match zone.last() {
            Some(p) => (addr_value(p.network()), addr_value(p.broadcast())),
            None if six => (0, u128::MAX),
            None => (0, u128::from(u32::MAX)),
        };
        let at = self.down.entry((six, zone.clone())).or_insert(high);
        let mut a = *at;
        let mut found = None;
        for _ in 0..SPARE_TRIES {
            if a <= low {
                break;
            }
            let n = Self::host(six, a);
            let z = self.named.zone(&n);
            // Inside a named prefix the zone lacks: below the outermost such one.
            let skip = z
                .iter()
                .find(|p| !zone.contains(p))
                .copied()
                .or_else(|| self.bound.iter().find(|b| b.contains(&n)).copied());
            if let Some(p) = skip {
                match addr_value(p.network()).checked_sub(1) {
                    Some(below) => a = below,
                    None => break,
                }
                continue;
            }
            a -= 1;
            if !self.taken.contains(&n) {
                found = Some(n);
                break;
            }
        }
        *at = a;
        found
    }
}

/// The endpoint of a store with this key. A store keeps workload endpoints, then
/// host endpoints, each in key order ([`Cluster::endpoints`]). A store out of that
/// order gives a false "none", which [`Live::endpoints_fast`]'s count check turns
/// into a rebuild.
/// Whether two stores have the same endpoint under a key (or neither has one).
fn same_endpoint(a: Option<&Arc<Endpoint>>, b: Option<&Arc<Endpoint>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

fn find_endpoint<'c>(c: &'c Cluster, key: &ResourceKey) -> Option<&'c Arc<Endpoint>> {
    c.endpoints
        .binary_search_by(|e| endpoint_rank(&e.key).cmp(&endpoint_rank(key)))
        .ok()
        .map(|i| &c.endpoints[i])
}

/// An endpoint key's place in a store's [`Cluster::endpoints`]: workload endpoints,
/// then host endpoints, each in key order.
fn endpoint_rank(k: &ResourceKey) -> (bool, &ResourceKey) {
    (k.kind != Kind::WorkloadEndpoint, k)
}

fn addr_bits(n: &IpNet) -> u128 {
    addr_value(n.addr())
}

fn addr_value(a: std::net::IpAddr) -> u128 {
    match a {
        std::net::IpAddr::V4(a) => u32::from(a).into(),
        std::net::IpAddr::V6(a) => a.into(),
    }
}

#[cfg(test)]
mod tests;
