//! The compiled classifier: every [`Program`] of a [`PolicySet`] turned into decision
//! trees whose leaves hold both views' precomputed [`Verdicts`], plus an LPM from
//! local endpoint address to its programs.
//!
//! Build ([`Classifier::build`]) runs off the packet path:
//! 1. each view of each program is flattened, per address family, into a first-match
//!    list of multi-range boxes (`flatten`): Log rules vanish, Pass rules and
//!    `TierDefault::Pass` are intersected with the flattened continuation, staged
//!    policies are dropped from the enforced list, end-of-tier defaults become
//!    catch-alls carrying their trigger's hit;
//! 2. one cut tree (`tree`) is built per program and family over both lists at once;
//!    a leaf is a region where each view's first intersecting entry covers the region,
//!    so the leaf stores the pair of decisions (like rte_acl's categories);
//! 3. traces are interned: a [`Decision`] carries a [`TraceId`] into the trace table,
//!    read back with [`Classify::trace`].
//!
//! Everything the build makes counts against [`BuildConfig::memory_budget`]. Each
//! program-family's arrangement is chosen by measured cost (`build_one`): one tree in
//! a small room first; if it does not fit or is deep, arrangements of several trees
//! whose lists are split by which fields each box spans widely (EffiCuts-style
//! partitions: source × destination, source, destination, groups merged while the
//! cost drops; all four ranged fields if none fits), whose leaves hold list positions
//! (the lookup takes, per view, the first position over the partitions); one tree
//! again beside the next arrangements (kept, and the others dropped, if it is
//! shallower than any arrangement of two or more trees can cost), and after
//! the others, whose output may take the larger of a multiple of the best
//! arrangement's bytes and `BuildConfig::single_tree_bytes_per_entry` per flattened
//! entry, but at most `BuildConfig::single_tree_bytes_factor` times the best
//! arrangement's bytes, and its build indexes a multiple of that (0 bytes per entry
//! never tries one). The cost of an arrangement is its trees' depths plus a per-tree round cost;
//! each attempt's limit counts the build's indexes as well as its output, so it
//! bounds build memory and time, and every limit stays within the budget; an attempt
//! whose growth, projected from the share of its tree already built, passes its
//! room by a margin is abandoned before it reaches the room (`tree::Progress`: the
//! share counts each finished subtree once, with margins measured on the ClassBench
//! sets so that no attempt that fits is abandoned there). If no
//! arrangement fits the budget, the build fails with [`BuildError::OverBudget`]
//! naming the budget, the program and what ran out. A merge changes one tree of its
//! plan, and trees of disjoint groups share no subtree, so each merge of a round is
//! priced by building that one tree (the plan's cost is the sum of its trees'), and
//! only the cheapest is built whole, its other trees built on in the workspace of
//! the merged one (test builds also build it afresh and check that it costs what was
//! priced and takes the same bytes). A partition tree that did not fit in a room
//! settles, without a build, every later plan holding the same group in at most that
//! room (test builds build it anyway and check that it does not fit).
//! Each attempt builds in a workspace of its own over the committed state (it finds
//! the committed subtrees, nodes and leaf ids, and makes new ones with offsets that
//! continue the committed arena): a dropped attempt is simply dropped, the chosen
//! one is appended as it is (not built again), and independent attempts (the probe
//! beside the first plan, the single tree beside the next plans, the merge prices of
//! one round) run at once on up to [`BuildConfig::build_threads`] threads. The choice
//! depends only on the attempts' results, so the classifier is the same for any
//! number of threads (tested).
//! Lists larger than `memory_budget / 256` entries (Pass rules multiplying the
//! continuation) fail the same way instead of exhausting memory.
//!
//! A [`Compiler`] keeps the interned boxes, decisions and traces, the subtree memo
//! and the arena from one build to the next, so recompiling a set after a rule change
//! rebuilds only the subtrees whose candidate lists changed (the regions the changed
//! rule's old and new boxes touch); [`Classifier::build`] is a fresh compiler's first
//! build. Both give the same lookups (property tests).
//!
//! Lookup ([`Classify::classify`]) never allocates, locks or panics: it works on
//! fixed-size blocks of walks that advance in lockstep, one tree level per round, so
//! the loads of different packets overlap. A round runs on vector lanes — 8 walks per
//! AVX-512 register, 4 per AVX2 register, gathers for the slot loads — or in the
//! scalar fallback ([`Kernel`], picked by [`Classifier::build`] from the CPU features
//! detected at run time; on the slots the builder makes, every kernel computes the same
//! step, `slot::step`).
//!
//! [`IdentityClassifier`] puts an address → identity stage (one LPM per family) in
//! front of these trees, so that large address lists (the addresses a peer selector
//! stands for) become a few identity ids and host bindings can be added or removed
//! without new trees; its module doc gives the design and the measurements.

mod flatten;
mod identity;
mod slices;
pub(crate) mod slot;
mod tree;

use crate::arch::huge::HugeSlice;
use crate::arch::walk;
pub use crate::arch::walk::Kernel;
pub use identity::{
    FreshLists, HostChangeRefused, HostIdentity, IdentityClassifier, IdentityStats,
    ProgramChangeRefused,
};

use foldhash::{HashMap, HashMapExt};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::lpm::Lpm;
use crate::program::{
    Classify, Decision, EndpointId, Family, FlowKey, FlowVerdicts, Hit, PolicySet, Program,
    ProgramId, TraceId, Verdict, Verdicts, View,
};
use flatten::{BoxMemo, DPORT, DST, MBox, SPORT, SRC, flatten};
use slot::{BLOCK, Block, LEAF, LIST, Slot};
use tree::{
    Arena, Below, Cand, Cands, CutParams, Item, Lanes, Memo, NONE, OverBudget, TreeBuilder,
};

/// Knobs of [`Classifier::build`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BuildConfig {
    /// Upper bound on the bytes of the compiled classifier (trees, tables, LPM) and on
    /// the flattened lists built on the way.
    pub memory_budget: usize,
    /// HiCuts space factor: how much one cut may replicate entries into children.
    pub spfac: f64,
    /// Regions with at most this many candidate rules stop being cut and become a
    /// short list checked in order (HiCuts' `binth`); 1 = fully resolved leaves only.
    pub binth: usize,
    /// Bytes per flattened entry a single tree's output may take (at least; also a
    /// multiple of the best partitioned arrangement's bytes) before the build
    /// partitions the program instead (separate trees cost lookup time, one over-grown
    /// tree costs memory and build time); 0 always partitions.
    pub single_tree_bytes_per_entry: usize,
    /// Most bits one node cuts (at most 8: fan-out up to 256); nodes whose children
    /// form few runs are stored compactly, one child per run.
    pub max_cut_bits: u32,
    /// When a partitioned arrangement was built, the single tree tried after it may
    /// take at most this many times its bytes in output (and its build indexes the
    /// usual multiple of that), whatever `single_tree_bytes_per_entry` allows: one
    /// tree saves the partitions' rounds, but past this factor it costs more memory
    /// than the rounds cost time. 0 = no such cap.
    pub single_tree_bytes_factor: usize,
    /// A single tree is not tried again in a larger room when the first, small
    /// attempt failed projecting more than this many times that room (its bytes
    /// over the share of its work done); 0 (or less) = always tried. Default 3: on a
    /// generated ClassBench suite (all twelve families at 1K and 10K, five at 100K)
    /// the single trees that fitted had been projected at most 0.83x their room
    /// (acl3_10k); the ones projected at 1.6-2.2x failed (fw5_1k, ipc1_10k,
    /// acl1_100k) and are still tried; the smallest projection skipped was 3.9x
    /// (fw2_1k), up to 6,200x (fw5_100k's, whose two failing attempts took 1.3 s).
    /// On a second suite, held out from that choice, every set got the same
    /// arrangement either way, but one fitting single tree had been projected at
    /// 1.79x its room (fw4_1k): the factor leaves 1.7x above it (BENCHMARKS.md,
    /// "ClassBench suite").
    pub single_tree_skip_factor: f64,
    /// Threads a build may use (the calling one included) to run independent
    /// attempts of one program-family's arrangement at once; 0 or 1 builds on the
    /// calling thread alone. The classifier is the same for any number: each attempt
    /// builds in a workspace of its own over the committed state, and the choice
    /// among them does not depend on which finished first. Attempts running at once
    /// each hold their own room (output and build indexes) at the same time. Default
    /// 1: a build shares the cores with the packet workers; on a two-core machine
    /// two threads built the ClassBench 10K sets in 0.4-0.9x the time of one at
    /// load ~2, but slower than one at load 6-7 where one tree is kept
    /// (BENCHMARKS.md, "ClassBench suite").
    pub build_threads: usize,
    /// In a single tree (not in partitions), a node whose children form more runs
    /// than a ranged node holds (9) but at most 36 is stored as two levels of ranged
    /// nodes (a few dozen slots) instead of a plain node (256 slots) when the
    /// deepest path through it stays within this many levels of the deepest path of
    /// its tree built so far (negative: that many levels shorter); `None` never
    /// splits. Default -1: a split path stays shorter than the deepest one, so a
    /// vector of keys rarely walks further. With 0, trees whose paths are nearly all
    /// of one depth (the ClassBench acl1 family) got up to 3 levels deeper through
    /// reused subtrees and lost 10-40 % of their rate (BENCHMARKS.md).
    pub split_dense_slack: Option<i32>,
    /// ... once the tree's own output has reached this many bytes (default 1 MiB,
    /// one core's second-level cache on the machine measured): on the ClassBench 1K
    /// sets, trees of 0.4-1 MB that stay in that cache, splitting cost 20-30 % of
    /// the lookup rate (the extra steps); on the 7K-10K acl3, acl4 and ipc1 sets
    /// (7-16 MB single trees) the default split took 0.5-0.76x the bytes at
    /// 0.8-1.2x the rate, measured on a loaded machine (BENCHMARKS.md, "ClassBench
    /// suite").
    pub split_dense_from_bytes: usize,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            memory_budget: 256 << 20,
            spfac: 4.0,
            binth: 1,
            max_cut_bits: 8,
            single_tree_bytes_per_entry: 6144,
            single_tree_bytes_factor: 16,
            single_tree_skip_factor: 3.0,
            build_threads: 1,
            split_dense_slack: Some(-1),
            split_dense_from_bytes: 1 << 20,
        }
    }
}

/// Why a [`Classifier`] could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// A binding names a program that is not in the set.
    #[error("endpoint binding {net} refers to program {program} but the set has {count} programs")]
    UnknownProgram {
        /// The binding's prefix.
        net: IpNet,
        /// The missing program index.
        program: u32,
        /// How many programs the set has.
        count: usize,
    },
    /// Two bindings have the same prefix.
    #[error("two endpoint bindings have the same prefix {net}")]
    DuplicateEndpoint {
        /// The prefix.
        net: IpNet,
    },
    /// The compiled form does not fit the memory budget, even partitioned.
    #[error(
        "the compiled classifier exceeds its memory budget of {budget} bytes ({what}) in rule program {program}, {family:?} rules: simplify the policies of that endpoint (fewer rules, ports or CIDRs), or build with a larger BuildConfig::memory_budget"
    )]
    OverBudget {
        /// The budget ([`BuildConfig::memory_budget`]).
        budget: usize,
        /// The program being compiled when the budget ran out.
        program: u32,
        /// Its family.
        family: Family,
        /// What ran out.
        what: &'static str,
    },
}

/// What a build produced and what it cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BuildStats {
    /// Bytes of the compiled classifier (trees, verdict and trace tables, LPM).
    pub bytes: usize,
    /// Longest root-to-leaf path, in nodes, over all trees.
    pub depth: u32,
    /// Inner tree nodes (after deduplication).
    pub nodes: usize,
    /// Tree slots (child pointers and leaves) in the arena.
    pub slots: usize,
    /// Entries of all leaf lists.
    pub items: usize,
    /// Entries of all flattened lists (both views, both families).
    pub entries: usize,
    /// Trees built (one per program and family, more when partitioned).
    pub trees: usize,
    /// Distinct traces.
    pub traces: usize,
    /// Arrangement attempts built (single trees and partition plans, kept or not),
    /// over all program-families.
    pub attempts: usize,
    /// Wall time of the build.
    pub build_time: Duration,
    /// Whether the build reused a [`Compiler`]'s earlier subtrees (then `bytes`,
    /// `nodes`, `slots` and `traces` include what earlier builds left in its arena).
    pub incremental: bool,
}

/// Where a program-family's tree(s) live.
#[derive(Clone, Debug)]
enum Root {
    /// One tree; leaves hold decisions (pure leaves index `verdicts`).
    Single(Slot),
    /// Several trees over disjoint parts of the lists; leaves hold list positions
    /// (pure leaves index `pairs`), the first position over all trees wins.
    Partitioned(Box<Partitioned>),
}

#[derive(Clone, Debug)]
struct Partitioned {
    roots: Vec<Slot>,
    /// Decision of each enforced-list position.
    enforced: Vec<u32>,
    /// Decision of each pending-list position.
    pending: Vec<u32>,
}

/// The compiled form of a [`PolicySet`]. Immutable; publish a new one to change policy.
#[derive(Debug)]
pub struct Classifier {
    lpm: Lpm,
    /// Per LPM value: the endpoint and its programs.
    endpoints: Vec<(EndpointId, Option<ProgramId>, Option<ProgramId>)>,
    /// Per program: the v4 and v6 roots.
    roots: Vec<[Root; 2]>,
    slots: HugeSlice<Slot>,
    /// The run starts of the tabled nodes in `slots`.
    starts: Vec<u64>,
    items: Vec<Item>,
    decisions: Vec<Decision>,
    verdicts: Vec<Verdicts>,
    /// Leaf position pairs of partitions, packed ([`pack`]).
    pairs: Vec<u64>,
    traces: Vec<Vec<Hit>>,
    stats: BuildStats,
    kernel: Kernel,
}

/// Interning tables shared by all programs of one build.
struct Interner {
    traces: Vec<Vec<Hit>>,
    trace_ids: HashMap<Vec<Hit>, u32>,
    decisions: Vec<Decision>,
    decision_ids: HashMap<Decision, u32>,
    verdicts: Vec<Verdicts>,
    verdict_ids: HashMap<(u32, u32), u32>,
    /// Position pairs, packed ([`pack`]).
    pairs: Vec<u64>,
    pair_ids: HashMap<(u32, u32), u32>,
}

/// The verdicts returned if a walk ever left the arena: deny in both views with an
/// empty trace (fail closed). The builder never makes such a walk.
const SENTINEL: Verdicts = Verdicts {
    enforced: Decision {
        verdict: Verdict::Deny,
        trace: TraceId(0),
    },
    pending: Decision {
        verdict: Verdict::Deny,
        trace: TraceId(0),
    },
};

impl Default for Interner {
    fn default() -> Self {
        Interner::new()
    }
}

/// A position pair `(enforced, pending)` as one word: enforced in the low half, so
/// one unsigned 32-bit minimum per half keeps both views' first positions.
#[inline(always)]
const fn pack(e: u32, p: u32) -> u64 {
    e as u64 | (p as u64) << 32
}

/// The `(enforced, pending)` of a [`pack`]ed pair.
#[inline(always)]
const fn unpack(x: u64) -> (u32, u32) {
    (x as u32, (x >> 32) as u32)
}

/// Both halves' minimum of two [`pack`]ed pairs.
#[inline(always)]
fn min_pair(a: u64, b: u64) -> u64 {
    let ((ae, ap), (be, bp)) = (unpack(a), unpack(b));
    pack(ae.min(be), ap.min(bp))
}

/// [`pack`] of `(NONE, NONE)`: no position yet.
const NO_PAIR: u64 = pack(NONE, NONE);

impl Interner {
    fn new() -> Self {
        let mut i = Interner {
            traces: Vec::new(),
            trace_ids: HashMap::new(),
            decisions: Vec::new(),
            decision_ids: HashMap::new(),
            verdicts: vec![SENTINEL],
            verdict_ids: HashMap::new(),
            pairs: Vec::new(),
            pair_ids: HashMap::new(),
        };
        i.trace(&[]);
        i
    }

    fn trace(&mut self, t: &[Hit]) -> TraceId {
        if let Some(&id) = self.trace_ids.get(t) {
            return TraceId(id);
        }
        let id = self.traces.len() as u32;
        self.traces.push(t.to_vec());
        self.trace_ids.insert(t.to_vec(), id);
        TraceId(id)
    }

    fn decision(&mut self, verdict: Verdict, trace: &[Hit]) -> u32 {
        let d = Decision {
            verdict,
            trace: self.trace(trace),
        };
        *self.decision_ids.entry(d).or_insert_with(|| {
            self.decisions.push(d);
            (self.decisions.len() - 1) as u32
        })
    }

    fn verdicts(&mut self, e: u32, p: u32) -> u32 {
        let get = |i: u32| {
            self.decisions
                .get(i as usize)
                .copied()
                .unwrap_or(SENTINEL.enforced)
        };
        let v = Verdicts {
            enforced: get(e),
            pending: get(p),
        };
        *self.verdict_ids.entry((e, p)).or_insert_with(|| {
            self.verdicts.push(v);
            (self.verdicts.len() - 1) as u32
        })
    }

    fn pair(&mut self, e: u32, p: u32) -> u32 {
        *self.pair_ids.entry((e, p)).or_insert_with(|| {
            self.pairs.push(pack(e, p));
            (self.pairs.len() - 1) as u32
        })
    }

    fn bytes(&self) -> usize {
        let hits: usize = self
            .traces
            .iter()
            .map(|t| t.len() * size_of::<Hit>() + size_of::<Vec<Hit>>())
            .sum();
        hits + self.verdicts.len() * size_of::<Verdicts>()
            + self.decisions.len() * size_of::<Decision>()
            + self.pairs.len() * 8
    }
}

/// Compiles policy sets one after another, keeping what each build learned for the
/// next: the interned boxes, decisions and traces, the subtree memo and the arena the
/// subtrees live in. A subtree is determined by its candidate list and region, so a
/// build of a set that differs from the last in a few rules reuses every subtree whose
/// candidates did not change and builds only those around the changed rules' boxes:
/// an incremental recompile.
///
/// A program-family that needed partitions is partitioned straight away in the next
/// builds while its merged lists have no fewer entries (the failed single-tree attempt
/// is most of a partitioned rebuild); with fewer entries one tree is tried again.
///
/// The arena only grows (subtrees no longer reachable stay in it): once the kept state
/// exceeds twice its size after the last fresh build (plus [`GARBAGE_SLACK`]), or an
/// incremental build runs out of budget, the next build starts from scratch. Each
/// [`Classifier`] made owns a compact copy of what it uses; the compiler itself also
/// holds the build-time indexes (memo, interning tables), many times the size of the
/// arena (BENCHMARKS.md: about 160 MB more peak memory on a 10K-rule set).
pub struct Compiler {
    cfg: BuildConfig,
    state: Option<State>,
    /// Bytes of garbage tolerated beyond twice the fresh size ([`GARBAGE_SLACK`]
    /// unless [`Compiler::with_garbage_slack`] set it).
    slack: usize,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler")
            .field("cfg", &self.cfg)
            .field("kept_bytes", &self.state.as_ref().map(State::bytes))
            .finish()
    }
}

/// Bytes of unreachable subtrees an incremental compiler tolerates beyond twice its
/// fresh size (so that small sets are not rebuilt from scratch at every change).
pub const GARBAGE_SLACK: usize = 4 << 20;

/// See [`Compiler`].
#[derive(Default)]
struct State {
    interner: Interner,
    arena: Arena,
    shared: [Shared; 2],
    /// Bytes of the arena and interner right after the fresh build the state began with.
    fresh: usize,
    /// For each (program index, family index) the last build partitioned: the length of
    /// its merged lists then.
    partitioned: HashMap<(usize, usize), usize>,
}

impl State {
    /// What the kept state holds, for the garbage bound: the arena and tables, and
    /// the build indexes (interned boxes, memo), which grow with every build too.
    fn bytes(&self) -> usize {
        self.arena.bytes()
            + self.interner.bytes()
            + self.shared.iter().map(Shared::bytes).sum::<usize>()
    }
}

impl Compiler {
    /// A compiler with no kept state (its first build is a fresh one).
    pub fn new(cfg: BuildConfig) -> Self {
        Compiler {
            cfg,
            state: None,
            slack: GARBAGE_SLACK,
        }
    }

    /// The same compiler, starting afresh once its kept state exceeds twice its fresh
    /// size plus `bytes` (instead of [`GARBAGE_SLACK`]): for small sets whose
    /// classifiers must stay near their fresh size.
    pub fn with_garbage_slack(mut self, bytes: usize) -> Self {
        self.slack = bytes;
        self
    }

    /// The knobs it builds with.
    pub fn config(&self) -> &BuildConfig {
        &self.cfg
    }

    /// Bytes of the state kept for the next build (arena, tables and build indexes;
    /// 0 before a build).
    pub fn kept_bytes(&self) -> usize {
        self.state.as_ref().map_or(0, State::bytes)
    }

    /// Compiles `set` within the budget, reusing the last build's subtrees where their
    /// candidates are unchanged. Gives the same lookups as [`Classifier::build`].
    pub fn build(&mut self, set: &PolicySet) -> Result<Classifier, BuildError> {
        self.build_keeping(set, true)
    }

    /// [`Compiler::build`]; with `keep` false the state is not kept for a next build,
    /// and the classifier takes its tables instead of copies.
    fn build_keeping(&mut self, set: &PolicySet, keep: bool) -> Result<Classifier, BuildError> {
        let t0 = Instant::now();
        let (lpm, endpoints) = endpoints(set, &self.cfg)?;
        let fixed = lpm.bytes() + endpoints.len() * 16 + set.programs.len() * 32;
        let reuse = self
            .state
            .take()
            .filter(|st| st.bytes() <= 2 * st.fresh + self.slack);
        if let Some(mut st) = reuse {
            let mut stats = BuildStats::default();
            match compile(set, &self.cfg, fixed, &mut st, &mut stats) {
                Ok(roots) => {
                    stats.incremental = true;
                    let c = output(lpm, endpoints, roots, fixed, &mut st, keep, stats, t0);
                    self.state = keep.then_some(st);
                    return Ok(c);
                }
                // Maybe the unreachable subtrees filled the budget: start afresh.
                Err(BuildError::OverBudget { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut st = State::default();
        let mut stats = BuildStats::default();
        let roots = compile(set, &self.cfg, fixed, &mut st, &mut stats)?;
        if keep {
            st.fresh = st.bytes();
        }
        let c = output(lpm, endpoints, roots, fixed, &mut st, keep, stats, t0);
        self.state = keep.then_some(st);
        Ok(c)
    }
}

/// The endpoint LPM and table of `set`.
#[allow(clippy::type_complexity)]
fn endpoints(
    set: &PolicySet,
    cfg: &BuildConfig,
) -> Result<(Lpm, Vec<(EndpointId, Option<ProgramId>, Option<ProgramId>)>), BuildError> {
    let mut lpm_entries = Vec::with_capacity(set.endpoints.len());
    let mut endpoints = Vec::with_capacity(set.endpoints.len());
    for b in &set.endpoints {
        for p in [b.ingress, b.egress].into_iter().flatten() {
            if p.0 as usize >= set.programs.len() {
                return Err(BuildError::UnknownProgram {
                    net: b.net,
                    program: p.0,
                    count: set.programs.len(),
                });
            }
        }
        lpm_entries.push((b.net, endpoints.len() as u32));
        endpoints.push((b.endpoint, b.ingress, b.egress));
    }
    let lpm = Lpm::new(&lpm_entries).map_err(|e| match e {
        crate::lpm::LpmError::Duplicate(net) => BuildError::DuplicateEndpoint { net },
        crate::lpm::LpmError::ValueTooLarge(_) => BuildError::OverBudget {
            budget: cfg.memory_budget,
            program: 0,
            family: Family::V4,
            what: "too many endpoints",
        },
    })?;
    Ok((lpm, endpoints))
}

/// Builds every program of `set` into `st` (on top of what it holds), within the
/// budget left after `fixed` bytes; the roots per program and family.
fn compile(
    set: &PolicySet,
    cfg: &BuildConfig,
    fixed: usize,
    st: &mut State,
    stats: &mut BuildStats,
) -> Result<Vec<[Root; 2]>, BuildError> {
    st.arena
        .set_limit(cfg.memory_budget.saturating_sub(fixed) / tree::SLOT_BYTES);
    let mut roots = Vec::with_capacity(set.programs.len());
    // Per family, for this build only (what the set's rules flatten to), when there
    // are programs to share rules.
    let many = set.programs.len() > 1;
    let boxes = [BoxMemo::new(many), BoxMemo::new(many)];
    for (pi, program) in set.programs.iter().enumerate() {
        let mut pair = Vec::with_capacity(2);
        for family in [Family::V4, Family::V6] {
            let over = |what| BuildError::OverBudget {
                budget: cfg.memory_budget,
                program: pi as u32,
                family,
                what,
            };
            let shared = &mut st.shared[family_index(family)];
            // A program-family that needed partitions last time, and has no fewer
            // entries now, is partitioned straight away (any tree gives the same
            // lookups; the single attempt is what costs); with fewer it may fit again.
            let key = (pi, family_index(family));
            let (root, entries) = build_one(
                program,
                family,
                st.partitioned.get(&key).copied(),
                &boxes[family_index(family)],
                cfg,
                &mut st.interner,
                &mut st.arena,
                shared,
                stats,
            )
            .map_err(over)?;
            if fixed + st.arena.bytes() + st.interner.bytes() > cfg.memory_budget {
                return Err(over("trace and verdict tables"));
            }
            match root {
                Root::Partitioned(_) => st.partitioned.insert(key, entries),
                Root::Single(_) => st.partitioned.remove(&key),
            };
            pair.push(root);
        }
        let [v4, v6]: [Root; 2] = pair.try_into().unwrap_or_else(|_| unreachable!());
        roots.push([v4, v6]);
    }
    Ok(roots)
}

/// The classifier of `roots` in `st`: the arena's slots copied into huge-page memory,
/// the other tables copied when `keep` (the state serves a next build) or taken.
#[allow(clippy::too_many_arguments)]
fn output(
    lpm: Lpm,
    endpoints: Vec<(EndpointId, Option<ProgramId>, Option<ProgramId>)>,
    roots: Vec<[Root; 2]>,
    fixed: usize,
    st: &mut State,
    keep: bool,
    mut stats: BuildStats,
    t0: Instant,
) -> Classifier {
    fn out<T: Clone>(v: &mut Vec<T>, keep: bool) -> Vec<T> {
        if keep { v.clone() } else { std::mem::take(v) }
    }
    let (arena, interner) = (&mut st.arena, &mut st.interner);
    stats.nodes = arena.inner_nodes;
    stats.slots = arena.slots.len();
    stats.traces = interner.traces.len();
    stats.bytes = fixed + arena.bytes() + interner.bytes();
    stats.items = arena.items.len();
    let mut c = Classifier {
        lpm,
        endpoints,
        roots,
        slots: HugeSlice::from_slice(&arena.slots),
        starts: out(&mut arena.table, keep),
        items: out(&mut arena.items, keep),
        decisions: out(&mut interner.decisions, keep),
        verdicts: out(&mut interner.verdicts, keep),
        pairs: out(&mut interner.pairs, keep),
        traces: out(&mut interner.traces, keep),
        stats,
        kernel: Kernel::best(),
    };
    c.stats.build_time = t0.elapsed();
    c
}

impl Classifier {
    /// Compiles `set` within `cfg`'s budget (what a fresh [`Compiler`]'s first build
    /// gives, without keeping its state).
    pub fn build(set: &PolicySet, cfg: &BuildConfig) -> Result<Classifier, BuildError> {
        Compiler::new(*cfg).build_keeping(set, false)
    }

    /// What the build produced and cost.
    pub fn stats(&self) -> &BuildStats {
        &self.stats
    }

    /// The walk kernel lookups use ([`Kernel::best`] after a build).
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Makes lookups use kernel `k` (every kernel gives the same results; this is for
    /// tests and benchmarks).
    pub fn set_kernel(&mut self, k: Kernel) {
        self.kernel = k;
    }

    /// Both views' verdicts of `program` for each key (no endpoint lookup): the
    /// rte_acl-comparable core. `out[i]` receives the verdicts of `keys[i]`; keys past
    /// `out.len()` are ignored, and an unknown program leaves `out` untouched.
    pub fn classify_program(&self, program: ProgramId, keys: &[FlowKey], out: &mut [Verdicts]) {
        let Some(roots) = self.roots.get(program.0 as usize) else {
            return;
        };
        if let [Root::Single(r4), Root::Single(r6)] = roots {
            // The common case: one tree per family, no partitions.
            let mut b = Block::new();
            for (kc, oc) in keys.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
                let n = kc.len().min(oc.len());
                let (kc, oc) = (&kc[..n], &mut oc[..n]);
                if !walk::set_all_v4(self.kernel, kc, *r4, &mut b) {
                    b.set_all(kc, *r4, *r6);
                }
                walk::walk(self.kernel, &self.slots, &self.starts, &mut b);
                match walk::resolve_leaves(self.kernel, &b.s, &self.verdicts, oc) {
                    // The vector resolution wrote every precomputed leaf's verdicts.
                    Some(mut rest) => {
                        while rest != 0 {
                            let j = rest.trailing_zeros() as usize;
                            rest &= rest - 1;
                            if let (Some(o), Some(k)) = (oc.get_mut(j), kc.get(j)) {
                                *o = self.resolve(b.s[j], k);
                            }
                        }
                    }
                    None => {
                        for ((o, &s), k) in oc.iter_mut().zip(&b.s).zip(kc) {
                            *o = self.resolve(s, k);
                        }
                    }
                }
            }
            return;
        }
        let mut res = [SENTINEL; BLOCK];
        for (kc, oc) in keys.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
            // A partitioned IPv4 arrangement and a block of IPv4 keys (the common
            // case of a partitioned program): vector set-up once, then only the
            // roots change per partition.
            if let [Root::Partitioned(p4), _] = roots
                && self.run_block_v4(p4, kc, oc)
            {
                continue;
            }
            let mut jobs: [Option<(&Root, &FlowKey)>; BLOCK] = [None; BLOCK];
            for (j, k) in kc.iter().take(oc.len()).enumerate() {
                jobs[j] = Some((&roots[family_index(k.family)], k));
            }
            self.run_block(&jobs, &mut res);
            let n = kc.len().min(oc.len());
            oc[..n].copy_from_slice(&res[..n]);
        }
    }

    /// Classifies each job (a program's roots for the key's family, and the key) of
    /// one block: every walk in lockstep, then the leaves resolved; partitioned
    /// programs walk one partition per round and keep, per view, the first position.
    fn run_block(&self, jobs: &[Option<(&Root, &FlowKey)>; BLOCK], out: &mut [Verdicts; BLOCK]) {
        let mut b = Block::new();
        let mut rounds = 1;
        for (j, job) in jobs.iter().enumerate() {
            let Some((root, k)) = job else { continue };
            let r = match root {
                Root::Single(r) => *r,
                Root::Partitioned(p) => {
                    rounds = rounds.max(p.roots.len());
                    p.roots.first().copied().unwrap_or(slot::EMPTY)
                }
            };
            b.set(j, r, k);
        }
        let mut pos = [NO_PAIR; BLOCK];
        for round in 0..rounds {
            if round > 0 {
                // The key words stay from round 0; only the roots change.
                for (j, job) in jobs.iter().enumerate() {
                    match job {
                        Some((Root::Partitioned(p), _)) if round < p.roots.len() => {
                            b.s[j] = p.roots[round];
                        }
                        _ => b.clear(j),
                    }
                }
            }
            walk::walk(self.kernel, &self.slots, &self.starts, &mut b);
            for (j, job) in jobs.iter().enumerate() {
                match job {
                    Some((Root::Single(_), k)) if round == 0 => out[j] = self.resolve(b.s[j], k),
                    Some((Root::Partitioned(p), k)) if round < p.roots.len() => {
                        pos[j] = min_pair(pos[j], self.positions(b.s[j], k));
                    }
                    _ => {}
                }
            }
        }
        for (j, job) in jobs.iter().enumerate() {
            if let Some((Root::Partitioned(p), _)) = job {
                let d = |at: u32, of: &[u32]| {
                    of.get(at as usize)
                        .map_or(SENTINEL.enforced, |&i| self.decision(i))
                };
                let (e, pe) = unpack(pos[j]);
                out[j] = Verdicts {
                    enforced: d(e, &p.enforced),
                    pending: d(pe, &p.pending),
                };
            }
        }
    }

    /// [`Classifier::run_block`] for a block of keys that are all IPv4, under the
    /// partitioned IPv4 arrangement `p`: the key words are set up once with the
    /// kernel's vector loads, each round re-points every walk at the next partition's
    /// root, and each view keeps its first position. Returns `false`, having written
    /// nothing to `out`, when the kernel has no vector set-up or a key is not IPv4.
    fn run_block_v4(&self, p: &Partitioned, keys: &[FlowKey], out: &mut [Verdicts]) -> bool {
        let n = keys.len().min(out.len()).min(BLOCK);
        let (keys, out) = (&keys[..n], &mut out[..n]);
        let Some(&first) = p.roots.first() else {
            return false;
        };
        let mut b = Block::new();
        if n == 0 || !walk::set_all_v4(self.kernel, keys, first, &mut b) {
            return false;
        }
        let mut pos = [NO_PAIR; BLOCK];
        for (round, &root) in p.roots.iter().enumerate() {
            if round > 0 {
                b.s[..n].fill(root);
            }
            walk::walk(self.kernel, &self.slots, &self.starts, &mut b);
            // The precomputed leaves' pairs on vector lanes; leaf lists here.
            let mut rest = walk::min_positions(self.kernel, &b.s, n, &self.pairs, &mut pos)
                .unwrap_or_else(|| u64::MAX.checked_shr(64 - n as u32).unwrap_or(0));
            while rest != 0 {
                let j = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                if let (Some(at), Some(&s), Some(k)) = (pos.get_mut(j), b.s.get(j), keys.get(j)) {
                    *at = min_pair(*at, self.positions(s, k));
                }
            }
        }
        let vector = walk::position_verdicts(
            self.kernel,
            &pos,
            &p.enforced,
            &p.pending,
            &self.decisions,
            SENTINEL.enforced,
            out,
        );
        if vector {
            return true;
        }
        let d = |at: u32, of: &[u32]| {
            of.get(at as usize)
                .map_or(SENTINEL.enforced, |&i| self.decision(i))
        };
        for (o, &at) in out.iter_mut().zip(&pos) {
            let (e, pe) = unpack(at);
            *o = Verdicts {
                enforced: d(e, &p.enforced),
                pending: d(pe, &p.pending),
            };
        }
        true
    }

    /// The first list positions (enforced, pending) of a partition's leaf `s`,
    /// [`pack`]ed.
    fn positions(&self, s: u64, k: &FlowKey) -> u64 {
        if s & LEAF == 0 {
            return NO_PAIR;
        }
        if s & LIST == 0 {
            self.pairs
                .get(s as u32 as usize)
                .copied()
                .unwrap_or(NO_PAIR)
        } else {
            let (e, p) = tree::scan(self.list(s), &lanes_of(k));
            pack(e, p)
        }
    }

    fn list(&self, s: u64) -> &[Item] {
        let off = s as u32 as usize;
        let count = ((s >> 32) & 0x3fff_ffff) as usize;
        self.items.get(off..off + count).unwrap_or(&[])
    }

    /// Diagnostics: for `program`, the (key word, bits, ranged) of each node on the
    /// path of `k`, and the leaf list length (0 = precomputed leaf).
    #[doc(hidden)]
    pub fn path_of(&self, program: ProgramId, k: &FlowKey) -> (Vec<(u32, u32, bool)>, usize) {
        let Some(s) = self.root(program, k.family) else {
            return (Vec::new(), 0);
        };
        let w = slot::words_of(k);
        let mut path = Vec::new();
        let mut s = s;
        while s & LEAF == 0 {
            let (word, _, bits) = slot::decode(s);
            path.push((word as u32, bits, s & slot::RANGED != 0));
            s = slot::step_checked(&self.slots, &self.starts, s, &w).unwrap_or(slot::EMPTY);
        }
        let n = if s & LIST != 0 {
            ((s >> 32) & 0x3fff_ffff) as usize
        } else {
            0
        };
        (path, n)
    }

    /// The verdicts of leaf slot `s` of a single tree for key `k`; a walk that did not
    /// end on a leaf yields [`SENTINEL`].
    #[inline(always)]
    fn resolve(&self, s: u64, k: &FlowKey) -> Verdicts {
        if s & LEAF == 0 {
            return SENTINEL;
        }
        if s & LIST == 0 {
            return *self.verdicts.get(s as u32 as usize).unwrap_or(&SENTINEL);
        }
        let (e, p) = tree::scan(self.list(s), &lanes_of(k));
        Verdicts {
            enforced: self.decision(e),
            pending: self.decision(p),
        }
    }

    /// Decision `i` of the decisions table ([`SENTINEL`]'s if there is none).
    #[inline]
    fn decision(&self, i: u32) -> Decision {
        self.decisions
            .get(i as usize)
            .copied()
            .unwrap_or(SENTINEL.enforced)
    }

    #[inline]
    fn endpoint(
        &self,
        family: Family,
        a: u128,
    ) -> Option<&(EndpointId, Option<ProgramId>, Option<ProgramId>)> {
        let v = match family {
            Family::V4 => self.lpm.lookup_v4(a as u32),
            Family::V6 => self.lpm.lookup_v6(a),
        }?;
        self.endpoints.get(v as usize)
    }

    fn root(&self, p: ProgramId, f: Family) -> Option<Slot> {
        match self.roots.get(p.0 as usize)?.get(family_index(f))? {
            Root::Single(r) => Some(*r),
            Root::Partitioned(_) => None,
        }
    }

    /// Up to `BLOCK / 2` keys: each key's egress and ingress programs in one block.
    fn classify_chunk(&self, keys: &[FlowKey], out: &mut [FlowVerdicts]) {
        let n = keys.len().min(out.len()).min(BLOCK / 2);
        let mut jobs: [Option<(&Root, &FlowKey)>; BLOCK] = [None; BLOCK];
        let mut ep: [Option<EndpointId>; BLOCK] = [None; BLOCK];
        for (i, k) in keys[..n].iter().enumerate() {
            let f = family_index(k.family);
            let egress = self
                .endpoint(k.family, k.src)
                .and_then(|&(id, _, p)| Some((id, p?)));
            let ingress = self
                .endpoint(k.family, k.dst)
                .and_then(|&(id, p, _)| Some((id, p?)));
            for (j, side) in [(2 * i, egress), (2 * i + 1, ingress)] {
                let Some((id, p)) = side else { continue };
                let Some(root) = self.roots.get(p.0 as usize).and_then(|r| r.get(f)) else {
                    continue;
                };
                ep[j] = Some(id);
                jobs[j] = Some((root, k));
            }
        }
        let mut res = [SENTINEL; BLOCK];
        self.run_block(&jobs, &mut res);
        for (i, o) in out[..n].iter_mut().enumerate() {
            *o = FlowVerdicts {
                egress: ep[2 * i].map(|id| (id, res[2 * i])),
                ingress: ep[2 * i + 1].map(|id| (id, res[2 * i + 1])),
            };
        }
    }
}

impl Classify for Classifier {
    fn classify(&self, keys: &[FlowKey], out: &mut [FlowVerdicts]) {
        for (kc, oc) in keys.chunks(BLOCK / 2).zip(out.chunks_mut(BLOCK / 2)) {
            self.classify_chunk(kc, oc);
        }
    }

    fn trace(&self, id: TraceId) -> &[Hit] {
        self.traces.get(id.0 as usize).map_or(&[], Vec::as_slice)
    }
}

fn family_index(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// The key as the trees index it (see [`tree::Lanes`]).
#[inline]
fn lanes_of(k: &FlowKey) -> Lanes {
    let mut l = [0u32; 16];
    match k.family {
        Family::V4 => {
            l[0] = k.src as u32;
            l[1] = k.dst as u32;
            l[2] = k.sport.into();
            l[3] = k.dport.into();
            l[4] = k.proto.into();
        }
        Family::V6 => {
            for w in 0..4 {
                l[w] = (k.src >> (96 - 32 * w)) as u32;
                l[4 + w] = (k.dst >> (96 - 32 * w)) as u32;
            }
            l[8] = k.sport.into();
            l[9] = k.dport.into();
            l[10] = k.proto.into();
        }
    }
    l
}

/// Build state of one family shared by all its programs: interned boxes and
/// candidates, and the memo of subtrees built from them (single trees and partitions
/// apart: their candidates index different things).
#[derive(Default)]
struct Shared {
    boxes: Vec<MBox>,
    /// `boxes` in the flat table the tree builder reads.
    flat: tree::Boxes,
    box_ids: HashMap<MBox, u32>,
    cands: Cands,
    memo: Memo,
    part_cands: Cands,
    part_memo: Memo,
}

impl Shared {
    fn box_id(&mut self, b: &MBox) -> u32 {
        if let Some(&id) = self.box_ids.get(b) {
            return id;
        }
        self.boxes.push(b.clone());
        self.flat.push(b);
        let id = (self.boxes.len() - 1) as u32;
        self.box_ids.insert(b.clone(), id);
        id
    }

    /// An estimate of the bytes held: interned boxes (their intervals) and memo
    /// entries (their candidate lists).
    fn bytes(&self) -> usize {
        let boxes: usize = self
            .boxes
            .iter()
            .map(|b| b.0.iter().map(|f| f.0.len() * 32).sum::<usize>() + 128)
            .sum::<usize>()
            + self.flat.bytes();
        let memo: usize = [&self.memo, &self.part_memo]
            .iter()
            .flat_map(|m| m.keys())
            .map(|k| k.len() * 4 + tree::MEMO_ENTRY_BYTES)
            .sum();
        boxes + memo
    }
}

/// Merges the enforced and pending lists (box, verdict-side index) into one
/// candidate sequence that keeps each list's order; entries with the same box at the
/// heads of both become one candidate standing for both views.
fn merge(e: &[(u32, u32)], p: &[(u32, u32)]) -> Vec<Cand> {
    // Positions of each box in each list, to look ahead in O(log n).
    let index = |l: &[(u32, u32)]| {
        let mut m: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, &(b, _)) in l.iter().enumerate() {
            m.entry(b).or_default().push(i);
        }
        m
    };
    let (ie, ip) = (index(e), index(p));
    let later = |m: &HashMap<u32, Vec<usize>>, b: u32, from: usize| {
        m.get(&b)
            .is_some_and(|v| v.partition_point(|&x| x < from) < v.len())
    };
    let mut out = Vec::with_capacity(e.len().max(p.len()));
    let (mut i, mut j) = (0, 0);
    while i < e.len() || j < p.len() {
        let (take_e, take_p) = match (e.get(i), p.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => (true, true),
            // Emit first whichever head the other list does not need before it.
            (Some(a), Some(b)) => {
                if later(&ip, a.0, j) && !later(&ie, b.0, i) {
                    (false, true)
                } else {
                    (true, false)
                }
            }
            (Some(_), None) => (true, false),
            _ => (false, true),
        };
        out.push(Cand {
            bx: if take_e { e[i].0 } else { p[j].0 },
            e: if take_e { e[i].1 } else { NONE },
            p: if take_p { p[j].1 } else { NONE },
        });
        i += usize::from(take_e);
        j += usize::from(take_p);
    }
    out
}

/// Walk steps one partition round costs beyond its tree's depth (setting up the
/// round, reading each lane's leaf positions, keeping the first), against the single
/// tree's vector resolution: the lookup cost model of the builder's choice.
const ROUND_COST: u32 = 6;

/// A single tree may take this many times the bytes of the best partitioned
/// arrangement (it saves the rounds; past that it costs more memory and build time
/// than it saves lookup time).
const SINGLE_FACTOR: usize = 32;

/// Build indexes per byte of output a single tree may hold while building.
const SCRATCH_FACTOR: usize = 4;

/// The same for the single tree tried after the partitions, whose output has its own
/// bound: measured on the ClassBench suite's 1K firewall sets, a single tree's memo
/// and node keys take 5-13 times its output bytes.
const SINGLE_SCRATCH_FACTOR: usize = 16;

/// The first single-tree attempt's room per entry.
const PROBE_BYTES_PER_ENTRY: usize = 1024;

/// Floor of a tree attempt's byte limit (small sets always get room).
const ATTEMPT_FLOOR: usize = 1 << 20;

/// Merge attempts after the first partitioned arrangements (each one build).
const MERGE_TRIES: usize = 4;
/// A merged or later arrangement may take this many times the best one's bytes
/// (output and build indexes together). Measured on the ClassBench suite's 10K sets:
/// the later arrangements that were kept needed at most ~2x the best one's output
/// plus their indexes, within 12x; the ones that fail (fw1/fw3/fw5_10k) spent
/// 0.7-0.9 s each growing to a 30x room before failing.
const MERGE_FACTOR: usize = 12;

/// Fields whose wildness (EffiCuts' "large") groups entries into partitions; an
/// entry's signature has bit `i` set when it is large in `SIG_FIELDS[i]`.
const SIG_FIELDS: [usize; 4] = [SRC, DST, SPORT, DPORT];

/// A partitioned arrangement: the tree (group) of each signature.
type Plan = [u8; 16];

/// The plans tried first: source × destination wildness (EffiCuts), source only,
/// destination only; then all four fields if none of these fits.
fn plan_of(f: impl Fn(usize) -> usize) -> Plan {
    std::array::from_fn(|sig| f(sig) as u8)
}

/// A plan's groups renumbered `0..k` in order of first use, and `k`.
fn canonical(plan: &Plan) -> (Plan, usize) {
    let mut map = [u8::MAX; 16];
    let mut k = 0u8;
    let mut out = [0u8; 16];
    for (sig, &g) in plan.iter().enumerate() {
        if map[g as usize] == u8::MAX {
            map[g as usize] = k;
            k += 1;
        }
        out[sig] = map[g as usize];
    }
    (out, k as usize)
}

/// What one arrangement measured: its lookup cost ([`ROUND_COST`] model) and bytes.
#[derive(Clone, Copy, Debug)]
struct Measured {
    cost: u32,
    bytes: usize,
    /// Cut levels of the deepest tree (what the cost compares: splitting dense
    /// nodes, `BuildConfig::split_dense_slack`, leaves the choice as it was).
    depth: u32,
    /// Walk steps of the deepest tree (split dense nodes count two).
    steps: u32,
}

/// Flattens and builds one program in one family, choosing between one tree and
/// partitions by measured cost. Partitioned arrangements (entries grouped by which
/// fields they span widely, EffiCuts/CutSplit-style; groups merged while that lowers
/// the cost) are built first, each within a byte limit tied to the best so far; their
/// cost is the sum over trees of depth plus [`ROUND_COST`]. One tree (not tried when
/// the merged lists have at least `partitioned_at` entries, or with
/// `single_tree_bytes_per_entry` 0) is then tried (beside the plans after the first
/// partitioned arrangement, in the room that one gives it, and kept if no arrangement
/// of two or more trees can cost less; else after them unless that attempt settled
/// it, by failing in at least the room they give or by fitting: then that tree is
/// the one compared) with an output of at most the larger
/// of [`SINGLE_FACTOR`] times the best partitioned bytes and
/// `single_tree_bytes_per_entry` per entry, capped at `single_tree_bytes_factor`
/// times the best partitioned bytes, and build indexes of at most
/// [`SINGLE_SCRATCH_FACTOR`] times that, and wins when its depth is the lower cost.
/// The limits count the build's indexes too (`Arena::held`), so they bound its memory
/// and time. The plans after the first (source only, destination only) get the room
/// the first one gives, the merges of one round the room that round's best gives,
/// so that each stage's attempts are independent of one another ([`choose`]). Also
/// the merged lists' length.
#[allow(clippy::too_many_arguments)]
fn build_one(
    program: &Program,
    family: Family,
    partitioned_at: Option<usize>,
    boxes: &BoxMemo,
    cfg: &BuildConfig,
    interner: &mut Interner,
    arena: &mut Arena,
    shared: &mut Shared,
    stats: &mut BuildStats,
) -> Result<(Root, usize), &'static str> {
    // A box costs at least a few hundred bytes while building; bound the lists by it.
    let limit = (cfg.memory_budget / 256).max(16);
    let enforced = flatten(program, family, View::Enforced, limit, boxes)
        .map_err(|_| "flattened enforced list")?;
    let pending = flatten(program, family, View::Pending, limit, boxes)
        .map_err(|_| "flattened pending list")?;
    stats.entries += enforced.len() + pending.len();
    let mut lists: [Vec<(u32, u32)>; 2] = [Vec::new(), Vec::new()];
    for (list, out) in [&enforced, &pending].into_iter().zip(lists.iter_mut()) {
        for e in list {
            out.push((
                shared.box_id(&e.mbox),
                interner.decision(e.verdict, &e.trace),
            ));
        }
    }
    let [ev, pv] = &lists;
    let params = CutParams {
        spfac: cfg.spfac,
        binth: cfg.binth.max(1),
        max_bits: cfg.max_cut_bits.clamp(1, slot::MAX_CUT_BITS),
        split_slack: cfg.split_dense_slack,
        split_from: cfg.split_dense_from_bytes,
    };
    let merged = merge(ev, pv);
    let entries = merged.len();
    let sig_of = |b: u32| -> usize {
        SIG_FIELDS
            .iter()
            .enumerate()
            .map(|(i, &d)| usize::from(is_large(&shared.boxes[b as usize], family, d)) << i)
            .sum()
    };
    let sigs: HashMap<u32, u8> = ev
        .iter()
        .chain(pv)
        .map(|&(b, _)| (b, sig_of(b) as u8))
        .collect();
    let positioned = |l: &[(u32, u32)]| -> Vec<(u32, u32)> {
        l.iter()
            .enumerate()
            .map(|(i, &(b, _))| (b, i as u32))
            .collect()
    };
    let (epos, ppos) = (positioned(ev), positioned(pv));
    let ctx = Ctx {
        family,
        params,
        arena,
        shared,
        interner,
        merged: &merged,
        epos: &epos,
        ppos: &ppos,
        sigs: &sigs,
        present: sigs.values().fold(0, |m, &s| m | 1 << s),
        attempts: Default::default(),
        failed: Default::default(),
    };
    let chosen = choose(&ctx, cfg, partitioned_at, entries);
    stats.attempts += ctx.attempts.into_inner();
    let (single, built) = chosen.ok_or("tree nodes, even partitioned")?;
    let depth = built.m.steps;
    let roots = built.roots.clone();
    if !commit(built, single, arena, shared, interner) {
        return Err("tree nodes (state changed during the build)");
    }
    stats.depth = stats.depth.max(depth);
    stats.trees += roots.len();
    let root = match roots.as_slice() {
        [r] if single => Root::Single(*r),
        _ => Root::Partitioned(Box::new(Partitioned {
            roots,
            enforced: ev.iter().map(|&(_, d)| d).collect(),
            pending: pv.iter().map(|&(_, d)| d).collect(),
        })),
    };
    Ok((root, entries))
}

/// Everything an attempt reads: the committed state it builds over and the
/// program-family's lists. Shared by the attempts running at once.
struct Ctx<'a> {
    family: Family,
    params: CutParams,
    arena: &'a Arena,
    shared: &'a Shared,
    interner: &'a Interner,
    merged: &'a [Cand],
    epos: &'a [(u32, u32)],
    ppos: &'a [(u32, u32)],
    sigs: &'a HashMap<u32, u8>,
    /// The signatures some entry has (bit per signature).
    present: u16,
    /// Attempts run so far.
    attempts: std::sync::atomic::AtomicUsize,
    /// Partition trees that did not fit: their group (the signatures in it that
    /// some entry has) and the room they had. A later plan with that group, in at
    /// most that room, cannot fit: its tree is the same list over the same committed
    /// state, and an attempt that overflows a room overflows every smaller one
    /// (`tree::Progress` checks against the room).
    failed: std::sync::Mutex<Vec<(u16, usize)>>,
}

/// An attempt that did not fit its room.
#[derive(Clone, Copy, Debug)]
struct Failed {
    /// For a single tree, its bytes projected to the whole tree when it failed
    /// ([`TreeBuilder::projected_bytes`]); `None` for a plan.
    projected: Option<f64>,
}

/// One attempt: one tree over the merged lists, or the trees of a partitioned plan.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// One tree in `room` bytes (output and build indexes), its output in `out`.
    Single { room: usize, out: Option<usize> },
    /// The partitions of `plan` in `room` bytes: the trees of the groups (in
    /// [`canonical`] numbering) whose bits `only` has ([`ALL_GROUPS`]: every one).
    Plan { plan: Plan, room: usize, only: u16 },
}

/// Every group of a plan ([`Job::Plan`]'s `only`).
const ALL_GROUPS: u16 = u16::MAX;

/// What an attempt built in its own workspace (over the committed state, which it
/// did not change): appended to that state if chosen ([`commit`]), else dropped.
struct Built {
    arena: Arena,
    cands: Cands,
    memo: Memo,
    /// The leaf pairs (verdicts of a single tree, positions of partitions) it
    /// interned beyond the committed ones, in the order of their ids.
    ids: Vec<(u32, u32)>,
    roots: Vec<Slot>,
    m: Measured,
    /// Per group of a plan, its entries and tree (no tree for a group with no
    /// entries or not built).
    groups: Vec<GroupTree>,
    /// The build indexes' bytes (`Arena::scratch`) when it finished: counted again
    /// by a job that goes on in this workspace ([`Ctx::run_from`]).
    scratch: usize,
}

/// One group of a plan's attempt and its partition tree.
#[derive(Clone, Copy, Debug, Default)]
struct GroupTree {
    /// Entries (both views) in the group.
    entries: usize,
    /// Cut levels.
    depth: u32,
    /// Walk steps.
    steps: u32,
    /// What it added to the workspace's held bytes (output and build indexes).
    held: usize,
    /// Its root; `None` when not built.
    root: Option<Slot>,
}

/// Leaf pairs interned over the committed table `below`, whose next id is `next`.
struct Ids<'a> {
    below: &'a HashMap<(u32, u32), u32>,
    next: u32,
    own: Vec<(u32, u32)>,
    map: HashMap<(u32, u32), u32>,
}

impl Ids<'_> {
    fn id(&mut self, e: u32, p: u32) -> u32 {
        if let Some(&i) = self.below.get(&(e, p)) {
            return i;
        }
        let next = self.next + self.own.len() as u32;
        *self.map.entry((e, p)).or_insert_with(|| {
            self.own.push((e, p));
            next
        })
    }
}

impl Ctx<'_> {
    /// Runs `job` in a workspace of its own.
    fn run(&self, job: Job) -> Result<Built, Failed> {
        self.run_from(job, None)
    }

    /// Runs `job` in the workspace of `from`, a plan's attempt (the same plan, with
    /// fewer groups built) if given: the groups it built are kept as they are, the
    /// others built after them. The result is what `job` alone builds but for the
    /// order of the trees in the arena (trees of disjoint groups share no subtree).
    fn run_from(&self, job: Job, from: Option<Built>) -> Result<Built, Failed> {
        let single = matches!(job, Job::Single { .. });
        let (memo, cands, ids, next) = if single {
            let i = self.interner;
            (
                &self.shared.memo,
                &self.shared.cands,
                &i.verdict_ids,
                i.verdicts.len(),
            )
        } else {
            let i = self.interner;
            (
                &self.shared.part_memo,
                &self.shared.part_cands,
                &i.pair_ids,
                i.pairs.len(),
            )
        };
        let below = Below {
            arena: self.arena,
            memo,
            cands,
        };
        let (mut arena, mut cands, mut memo, own, done) = match from {
            Some(b) => {
                let mut arena = b.arena;
                arena.scratch = b.scratch;
                (arena, b.cands, b.memo, b.ids, b.groups)
            }
            None => (
                Arena::over(self.arena),
                Cands::over(cands),
                Memo::default(),
                Vec::new(),
                Vec::new(),
            ),
        };
        let mut ids = Ids {
            below: ids,
            next: next as u32,
            map: (next as u32..).zip(&own).map(|(i, &p)| (p, i)).collect(),
            own,
        };
        // The groups `from` built.
        let built = |g: usize| done.get(g).is_some_and(|t: &GroupTree| t.root.is_some());
        // What the committed arena may still grow by, within its limit.
        let left = self
            .arena
            .slot_limit
            .saturating_sub(self.arena.bytes() / tree::SLOT_BYTES);
        let room = match job {
            Job::Single { room, .. } | Job::Plan { room, .. } => room,
        };
        arena.slot_limit = left.min(room / tree::SLOT_BYTES);
        if let Job::Single { out: Some(out), .. } = job {
            arena.out_limit = Some(out.min(room) / tree::SLOT_BYTES);
        }
        // A plan with a group that did not fit in at least this room is settled as
        // failed without a build (`Ctx::failed`).
        let masks = match job {
            Job::Plan { plan, only, .. } => {
                let mut masks = group_masks(&plan, self.present, only);
                for (g, m) in masks.iter_mut().enumerate() {
                    if built(g) {
                        *m = 0;
                    }
                }
                masks
            }
            Job::Single { .. } => Vec::new(),
        };
        let limit = arena.slot_limit * tree::SLOT_BYTES;
        let settled = self
            .failed
            .lock()
            .is_ok_and(|failed| settles(&failed, &masks, limit));
        if settled {
            // The slow twin, in test builds: the plan built does not fit either.
            #[cfg(debug_assertions)]
            if let Ok(mut failed) = self.failed.lock() {
                let known = std::mem::take(&mut *failed);
                drop(failed);
                let built = self.run(job);
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = known;
                }
                assert!(built.is_err(), "{job:?}: settled as failed, but fits");
            }
            return Err(Failed { projected: None });
        }
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut m = Measured {
            cost: 0,
            bytes: 0,
            depth: 0,
            steps: 0,
        };
        let mut roots = Vec::new();
        let mut groups = Vec::new();
        let mut leaf = |e: u32, p: u32| ids.id(e, p);
        // Only a single tree splits dense nodes: partitions are shallow trees whose
        // rounds each pay the extra steps, and their bytes are small already (and
        // set the rooms of the later attempts).
        let params = if single {
            self.params
        } else {
            CutParams {
                split_slack: None,
                ..self.params
            }
        };
        // One tree over `list` in this workspace: its root, depth (cut levels), walk
        // steps and what it added to the workspace's held bytes; on failure, the room
        // it had.
        let mut tree = |list: &[Cand]| -> Result<(Slot, u32, u32, usize), (Failed, usize)> {
            let held = arena.held();
            let had = (arena.slot_limit * tree::SLOT_BYTES).saturating_sub(held);
            let mut t = TreeBuilder::new(
                self.family,
                &self.shared.flat,
                &mut cands,
                &mut memo,
                params,
                &mut leaf,
                &mut arena,
                Some(below),
            );
            let root = t.build(list).map_err(|OverBudget| {
                let projected = single.then(|| t.projected_bytes());
                (Failed { projected }, had)
            })?;
            let (depth, steps) = (t.cut_depth, t.max_depth);
            drop(t);
            Ok((root, depth, steps, arena.held() - held))
        };
        match job {
            Job::Single { .. } => {
                let (root, depth, steps, _) = tree(self.merged).map_err(|e| e.0)?;
                roots.push(root);
                m.cost = depth;
                m.depth = depth;
                m.steps = steps;
            }
            Job::Plan { plan, only, .. } => {
                let (plan, k) = canonical(&plan);
                groups = vec![GroupTree::default(); k];
                for (g, t) in groups.iter_mut().enumerate() {
                    if built(g) {
                        *t = done[g];
                        continue;
                    }
                    let pick = |l: &[(u32, u32)]| -> Vec<(u32, u32)> {
                        l.iter()
                            .copied()
                            .filter(|&(b, _)| {
                                self.sigs
                                    .get(&b)
                                    .is_some_and(|&s| plan[s as usize] as usize == g)
                            })
                            .collect()
                    };
                    let (ge, gp) = (pick(self.epos), pick(self.ppos));
                    t.entries = ge.len() + gp.len();
                    if t.entries == 0 || only >> g & 1 == 0 {
                        continue;
                    }
                    let (root, depth, steps, held) =
                        tree(&merge(&ge, &gp)).map_err(|(f, had)| {
                            if let (Ok(mut failed), Some(&g)) = (self.failed.lock(), masks.get(g)) {
                                failed.push((g, had));
                            }
                            f
                        })?;
                    *t = GroupTree {
                        entries: t.entries,
                        depth,
                        steps,
                        held,
                        root: Some(root),
                    };
                }
                for t in &groups {
                    if let Some(root) = t.root {
                        roots.push(root);
                        m.cost += t.depth + ROUND_COST;
                        m.depth = m.depth.max(t.depth);
                        m.steps = m.steps.max(t.steps);
                    }
                }
            }
        }
        let scratch = std::mem::take(&mut arena.scratch);
        m.bytes = arena.bytes();
        Ok(Built {
            arena,
            cands,
            memo,
            ids: ids.own,
            roots,
            m,
            groups,
            scratch,
        })
    }

    /// Runs `jobs` on up to `threads` threads (the calling one included), each in
    /// its own workspace; the results in job order. Once a finished job satisfies
    /// `stop`, no further job starts (those give `None`). What each job builds
    /// depends only on the committed state and the job, so any number of threads
    /// gives the same results for the jobs that ran.
    #[allow(clippy::type_complexity)]
    fn run_all(
        &self,
        jobs: &[Job],
        threads: usize,
        stop: &(dyn Fn(&Job, &Result<Built, Failed>) -> bool + Sync),
    ) -> Vec<Option<Result<Built, Failed>>> {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let next = AtomicUsize::new(0);
        let stopped = AtomicBool::new(false);
        let out: Mutex<Vec<Option<Result<Built, Failed>>>> =
            Mutex::new((0..jobs.len()).map(|_| None).collect());
        let work = || {
            while !stopped.load(Ordering::Acquire) {
                let i = next.fetch_add(1, Ordering::AcqRel);
                let Some(&job) = jobs.get(i) else { break };
                let r = self.run(job);
                if stop(&job, &r) {
                    stopped.store(true, Ordering::Release);
                }
                if let Ok(mut o) = out.lock() {
                    o[i] = Some(r);
                }
            }
        };
        let threads = threads.clamp(1, jobs.len().max(1));
        if threads == 1 {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 1..threads {
                    s.spawn(work);
                }
                work();
            });
        }
        out.into_inner().unwrap_or_default()
    }
}

/// Appends the chosen attempt's workspace to the committed state: its arena, its
/// candidates and memo (single tree or partitions), its leaf pairs to the interner.
/// `false` (nothing changed) if the state changed since the workspace was made.
fn commit(
    b: Built,
    single: bool,
    arena: &mut Arena,
    shared: &mut Shared,
    interner: &mut Interner,
) -> bool {
    let (cands, memo) = if single {
        (&mut shared.cands, &mut shared.memo)
    } else {
        (&mut shared.part_cands, &mut shared.part_memo)
    };
    if !arena.extends_to(&b.arena) || !cands.extends_to(&b.cands) {
        return false;
    }
    let next = if single {
        interner.verdicts.len()
    } else {
        interner.pairs.len()
    };
    let mut same = arena.absorb(b.arena) && cands.absorb(b.cands);
    tree::absorb_memo(memo, b.memo);
    for (k, &(e, p)) in b.ids.iter().enumerate() {
        let id = if single {
            interner.verdicts(e, p)
        } else {
            interner.pair(e, p)
        };
        same &= id as usize == next + k;
    }
    same
}

/// Chooses the program-family's arrangement (module doc, [`build_one`]): `true` and
/// the attempt for one tree, `false` and it for partitions, `None` if none fits.
/// Independent attempts run at once on up to `cfg.build_threads` threads; the
/// choice is the same for any number.
fn choose(
    ctx: &Ctx<'_>,
    cfg: &BuildConfig,
    partitioned_at: Option<usize>,
    entries: usize,
) -> Option<(bool, Built)> {
    let threads = cfg.build_threads.max(1);
    let part_cap = cfg.memory_budget / 4;
    let try_single =
        partitioned_at.is_none_or(|n| entries < n) && cfg.single_tree_bytes_per_entry > 0;
    // The room counts the build's indexes too (several times the tree's bytes), so
    // a single tree may use the whole budget while building.
    let single_out = entries
        .saturating_mul(cfg.single_tree_bytes_per_entry)
        .min(cfg.memory_budget);
    let single_cap = single_out
        .saturating_mul(SCRATCH_FACTOR)
        .min(cfg.memory_budget);
    // A single tree below this depth is kept at once: no arrangement of two or more
    // trees can cost less.
    let shallow = 2 * (1 + ROUND_COST);
    let wins = |job: &Job, r: &Result<Built, Failed>| {
        matches!(job, Job::Single { .. }) && matches!(r, Ok(b) if b.m.depth < shallow)
    };
    // One tree within a small room first (beside the first partitioned plan).
    let probe = single_cap.min(entries.saturating_mul(PROBE_BYTES_PER_ENTRY) + ATTEMPT_FLOOR);
    // The single tree tried with partitions in hand: its output may take the larger
    // of a multiple of the best partitioned bytes and `single_tree_bytes_per_entry` per
    // entry, its build indexes [`SINGLE_SCRATCH_FACTOR`] times that, all within the
    // budget. The output's room is not tied to the partitions' bytes alone: small
    // partitions (a few hundred KB) must not starve a single tree that needs a few MB
    // and several times that in indexes; but it is capped at
    // `single_tree_bytes_factor` times those bytes (its indexes follow the output).
    let single_job = |b: Option<&Measured>| -> Job {
        let out_room = b.map_or(single_out, |b| {
            let own = single_out.max(SINGLE_FACTOR * b.bytes + ATTEMPT_FLOOR);
            match cfg.single_tree_bytes_factor {
                0 => own,
                f => own.min(f.saturating_mul(b.bytes)),
            }
        });
        let room = cfg
            .memory_budget
            .min(out_room.saturating_mul(1 + SINGLE_SCRATCH_FACTOR));
        Job::Single {
            room,
            out: Some(out_room),
        }
    };
    let room_of = |j: &Job| match j {
        Job::Single { room, .. } | Job::Plan { room, .. } => *room,
    };
    let plan_room = |best: &Option<(Plan, Built)>| {
        best.as_ref().map_or(part_cap, |b| {
            part_cap.min(MERGE_FACTOR * b.1.m.bytes + ATTEMPT_FLOOR)
        })
    };
    // Keeps the better of `best` and plan `plan`'s result (the earlier on a tie).
    let better = |best: &mut Option<(Plan, Built)>, plan: Plan, r: Result<Built, Failed>| {
        if let Ok(b) = r
            && best.as_ref().is_none_or(|x| b.m.cost < x.1.m.cost)
        {
            *best = Some((plan, b));
        }
    };
    let sd = plan_of(|s| s & 3);
    let mut best: Option<(Plan, Built)> = None;
    // Stage 0: the probe and the source x destination plan.
    let mut jobs = Vec::new();
    if try_single {
        jobs.push(Job::Single {
            room: probe,
            out: None,
        });
    }
    jobs.push(Job::Plan {
        plan: sd,
        room: part_cap,
        only: ALL_GROUPS,
    });
    let mut res = ctx.run_all(&jobs, threads, &wins);
    let first = res.pop().flatten();
    let probed = if try_single {
        res.pop().flatten()
    } else {
        None
    };
    // A single tree whose probe projected it to far more than a later attempt's
    // room is not tried in that room (`BuildConfig::single_tree_skip_factor`).
    let probe_need = match &probed {
        Some(Err(f)) => f.projected,
        _ => None,
    };
    let hopeless = |job: &Job| {
        let factor = cfg.single_tree_skip_factor;
        factor > 0.0 && probe_need.is_some_and(|need| need > factor * room_of(job) as f64)
    };
    if let Some(Ok(b)) = probed
        && b.m.depth < shallow
    {
        return Some((true, b));
    }
    if let Some(r) = first {
        better(&mut best, sd, r);
    }
    // Stage 1: source only and destination only, in the room the first plan gives;
    // beside them the single tree in the room that plan gives it (kept at once if
    // shallow; if it fits deeper, kept for the comparison at the end).
    // The single tree's attempt with plans in hand: its room, and what it built.
    let mut early: Option<(usize, Option<Built>)> = None;
    let mut jobs = Vec::new();
    if try_single && let Some(b) = &best {
        let job = single_job(Some(&b.1.m));
        if room_of(&job) > probe {
            if hopeless(&job) {
                early = Some((room_of(&job), None));
            } else {
                jobs.push(job);
            }
        }
    }
    let with_early = !jobs.is_empty();
    let later = [plan_of(|s| s & 1), plan_of(|s| (s >> 1) & 1)];
    for plan in later {
        jobs.push(Job::Plan {
            plan,
            room: plan_room(&best),
            only: ALL_GROUPS,
        });
    }
    let mut res = ctx.run_all(&jobs, threads, &wins).into_iter();
    if with_early {
        let room = room_of(&jobs[0]);
        match res.next().flatten() {
            Some(Ok(b)) if b.m.depth < shallow => return Some((true, b)),
            Some(Ok(b)) => early = Some((room, Some(b))),
            _ => early = Some((room, None)),
        }
    }
    for (plan, r) in later.into_iter().zip(res) {
        if let Some(r) = r {
            better(&mut best, plan, r);
        }
    }
    // All four fields only when the two-field plans failed.
    if best.is_none() {
        let all = plan_of(|s| s);
        let job = Job::Plan {
            plan: all,
            room: part_cap,
            only: ALL_GROUPS,
        };
        if let Some(Some(r)) = ctx.run_all(&[job], 1, &wins).pop() {
            better(&mut best, all, r);
        }
    }
    if try_single
        && early.is_none()
        && let Some(b) = &best
    {
        let job = single_job(Some(&b.1.m));
        if room_of(&job) > probe {
            // A hopeless attempt is settled as one that failed in its room.
            let built = if hopeless(&job) {
                None
            } else {
                ctx.run_all(&[job], 1, &wins).pop().flatten()
            };
            match built {
                Some(Ok(b)) if b.m.depth < shallow => return Some((true, b)),
                Some(Ok(b)) => early = Some((room_of(&job), Some(b))),
                _ => early = Some((room_of(&job), None)),
            }
        }
    }
    // Merge the smallest group into another while that lowers the cost. A merge
    // changes one tree: each of a round's merges (in the room the round's best
    // gives, less what its other trees held) builds only that tree, which gives the
    // merged plan's cost (trees of disjoint groups share no subtree: a plan's cost is
    // the sum of its trees'). The cheapest is then built whole, and kept if it costs
    // less (the next cheapest if it does not fit).
    let mut tries = 0;
    while let Some((plan, b)) = &best {
        let (plan, k) = canonical(plan);
        // Two groups merged are one tree of list positions, which the single tree
        // (pure leaves, no round) always beats when it fits.
        if k < 2 || (k == 2 && try_single) || tries >= MERGE_TRIES {
            break;
        }
        let entries = |g: usize| b.groups[g].entries;
        let Some(small) = (0..k)
            .filter(|&g| entries(g) > 0)
            .min_by_key(|&g| entries(g))
        else {
            break;
        };
        let room = part_cap.min(MERGE_FACTOR * b.m.bytes + ATTEMPT_FLOOR);
        let held: usize = b.groups.iter().map(|g| g.held).sum();
        let (depth, held_by) = (|g: usize| b.groups[g].depth, |g: usize| b.groups[g].held);
        let merges: Vec<(Plan, usize)> = (0..k)
            .filter(|&g| g != small && entries(g) > 0)
            .take(MERGE_TRIES - tries)
            .map(|into| (merged_plan(&plan, small, into), into))
            .collect();
        tries += merges.len();
        // Each merge builds the merged group only: in the merged plan's numbering, the
        // group of `into`'s first signature.
        let jobs: Vec<Job> = merges
            .iter()
            .map(|&(merged, into)| {
                let first = plan.iter().position(|&g| g as usize == into);
                let group = first.map_or(0, |s| canonical(&merged).0[s]);
                Job::Plan {
                    plan: merged,
                    room: room.saturating_sub(held - held_by(small) - held_by(into)),
                    only: 1 << group,
                }
            })
            .collect();
        let cost = b.m.cost;
        // Each merge's cost, from its one tree, cheapest first (the earlier on a tie),
        // with the workspace it was built in.
        let mut priced: Vec<(u32, usize, Built)> = merges
            .iter()
            .zip(ctx.run_all(&jobs, threads, &wins))
            .enumerate()
            .filter_map(|(i, (&(_, into), r))| {
                let t = r?.ok()?;
                let merged = t.groups.iter().map(|g| g.depth).sum::<u32>();
                let c = cost + merged - depth(small) - depth(into) - ROUND_COST;
                (c < cost).then_some((c, i, t))
            })
            .collect();
        priced.sort_unstable_by_key(|p| (p.0, p.1));
        let mut kept = false;
        for (c, i, t) in priced {
            let plan = merges[i].0;
            let job = Job::Plan {
                plan,
                room,
                only: ALL_GROUPS,
            };
            // The plan's other trees, built on in the workspace of its merged one.
            if let Ok(m) = ctx.run_from(job, Some(t)) {
                // The slow twin, in test builds: the whole plan built afresh costs what
                // was priced and takes the same bytes.
                #[cfg(debug_assertions)]
                if let Ok(fresh) = ctx.run(job) {
                    assert_eq!(
                        fresh.m.cost, c,
                        "merged plan {plan:?}: priced from one tree"
                    );
                    assert_eq!(fresh.m.bytes, m.m.bytes, "merged plan {plan:?}: built on");
                }
                debug_assert_eq!(m.m.cost, c, "merged plan {plan:?}: its cost from one tree");
                if m.m.cost < cost {
                    best = Some((plan, m));
                    kept = true;
                    break;
                }
            }
        }
        if !kept {
            break;
        }
    }
    // One tree again, in the room the best arrangement gives it, unless the early
    // attempt settled it: it failed in at least that room, or it fitted (then it is
    // the single tree, kept if it costs less than that arrangement).
    let late = single_job(best.as_ref().map(|b| &b.1.m));
    let single = match early {
        Some((_, Some(s))) => Some(s),
        Some((room, None)) if room_of(&late) <= room => None,
        _ if try_single && room_of(&late) > probe && !hopeless(&late) => ctx
            .run_all(&[late], 1, &wins)
            .pop()
            .flatten()
            .and_then(Result::ok),
        _ => None,
    };
    match (single, best) {
        (Some(s), b) if b.as_ref().is_none_or(|b| s.m.depth < b.1.m.cost) => Some((true, s)),
        (_, b) => b.map(|b| (false, b.1)),
    }
}

/// Per group of `plan` (in [`canonical`] numbering), the signatures in it that
/// `present` has; 0 for the groups not in `only`.
fn group_masks(plan: &Plan, present: u16, only: u16) -> Vec<u16> {
    let (plan, k) = canonical(plan);
    let mut masks = vec![0u16; k];
    for (sig, &g) in plan.iter().enumerate() {
        if only >> g & 1 == 1 {
            masks[g as usize] |= present & 1 << sig;
        }
    }
    masks
}

/// Whether a plan whose groups to build have the signature sets `masks` (0: not
/// built), in a room of `limit` bytes, is settled by the failures `failed` (a group's
/// signature set and the room its tree overflowed): one of its groups overflowed at
/// least that room.
fn settles(failed: &[(u16, usize)], masks: &[u16], limit: usize) -> bool {
    failed
        .iter()
        .any(|&(g, had)| g != 0 && had >= limit && masks.contains(&g))
}

/// `plan` (canonical) with group `small`'s signatures in group `into`.
fn merged_plan(plan: &Plan, small: usize, into: usize) -> Plan {
    std::array::from_fn(|s| {
        if plan[s] as usize == small {
            into as u8
        } else {
            plan[s]
        }
    })
}

/// Whether box `b` spans at least 1/256 of field `d` (EffiCuts' "large").
fn is_large(b: &MBox, family: Family, d: usize) -> bool {
    let w = flatten::widths(family)[d];
    let size: u128 = b.0[d]
        .0
        .iter()
        .map(|&(lo, hi)| (hi - lo).saturating_add(1))
        .fold(0, u128::saturating_add);
    size >= 1u128 << (w - 8)
}

#[cfg(test)]
mod tests;
