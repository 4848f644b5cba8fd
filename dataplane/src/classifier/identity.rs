//! The identity classifier: an address → identity stage in front of the decision
//! trees, so the trees cut on a few identity ids instead of thousands of host prefixes.
//!
//! # Why
//! A control plane that expands peer selectors into the addresses of the endpoints
//! they select hands the classifier address lists of thousands of `/32`s, one list
//! per distinct peer criterion. Built directly ([`Classifier`]), each `/32` becomes
//! a box edge in every program that names the list, and one program's trees carry
//! every pod the program's rules mention. Measured on the lowering bench's 5000 pods
//! × 200 policies with named ports: 8.5 s and 12.3 MB for the trees alone.
//!
//! # How (Cilium's ipcache / Calico's IP sets, without either's vocabulary)
//! Every prefix any rule names, and every endpoint binding's prefix, is a *class*.
//! Prefixes are nested or disjoint, so the prefixes containing an address are the
//! ancestors of the longest one: one LPM lookup gives an address's class, and the
//! class decides both which rule lists contain the address and which binding owns
//! it. Classes in exactly the same rule lists (the *signature*) share an
//! *identity*: replicas of a pod (same labels, same named ports) are one identity,
//! however many there are. Identities are numbered per family, ordered by signature
//! so that a list's identities form few runs, 256 ids apart (the ids between are
//! free for identities split off later: [`Blocks`]), and every rule's address lists
//! are rewritten to the prefixes covering those runs in a synthetic address space. The
//! trees ([`Classifier`]) are built over the rewritten programs; a lookup maps the
//! key's source and destination to their identities and bindings (one LPM walk
//! each: for IPv4 a 16-8-8 table whose leaves hold the class's identity and binding,
//! so no class-table read follows, a block's addresses eight per gather where the
//! CPU has AVX-512), then walks the binding's program trees on the rewritten key.
//! Both views' verdicts still come from one walk per endpoint-direction.
//!
//! Endpoint bindings stay out of the trees (they only pick the program), and the
//! trees are shared between generations that differ
//! only by a host address: [`IdentityClassifier::with_host`] and
//! [`IdentityClassifier::without_host`] give the next generation with one host
//! prefix bound or unbound. What lookups read (the LPMs' first levels and nodes, the
//! per-class identity and binding, the bindings) is flat, each table one slice
//! read as a `Vec` is, shared between generations and written by a change into a
//! recycled buffer ([`crate::flat`]: the buffer of the generation before the
//! previous one, once it is dropped, brought up to date by replaying the previous
//! change's writes), so a host change costs its own writes and its predecessor's,
//! not a copy of the tables (at 20,000 pods they hold about 1 MB, and the IPv4
//! table's first level 512 KiB more). The per-class data only changes read (each
//! class's prefix and parent, the largest table) is kept in chunks behind `Arc`s
//! ([`crate::chunked`]) and shared between generations but for the chunk a change
//! writes. Chunking the lookup tables too was tried: one more dependent load per
//! LPM level and table read made lookups measurably slower;
//! [`IdentityClassifier::with_programs`] gives the next generation with programs added
//! (their trees built as a new *part*, every earlier part shared) and bindings pointed
//! at them, as long as every address list the added programs name is one the
//! classifier knows or a *fresh* list (exactly these addresses now) made of whole
//! identities: a fresh list is resolved to the identities of the classes it covers
//! and kept for later changes. A fresh list known in a form that no longer describes
//! it (a host split off since from an identity in it is in the form, not in the
//! addresses) is refused as stale, since one list cannot take two forms; a caller
//! that from then on names it only as exactly its addresses forgets it first
//! ([`IdentityClassifier::forgetting_lists`]: a layer that hides the earlier
//! layers' form; the latest layer knowing a list decides).
//! A lookup walks each program in the part that holds it; a part's trace ids are
//! offset past the earlier parts' ones. [`IdentityClassifier::with_programs_merged`]
//! builds the last part again instead of adding one when few of its programs are
//! still bound (changes that each rebind the programs of the one before then keep the
//! part count), dropping its programs no binding names; each part keeps the
//! identity-space programs it was built from for that, and the incremental
//! [`Compiler`] that built it (taken by the next merge, which then rebuilds only the
//! subtrees whose candidates changed: a new peer's programs differ from the part's
//! previous ones in one rule's list). The compiler starts afresh once its garbage
//! reaches its fresh size, so a part stays within about twice its fresh bytes, and
//! only the last part keeps one (a part added lets the one before it go); what the
//! parts keep is in [`IdentityStats`] (`part_program_bytes`,
//! `part_compiler_bytes`).
//!
//! The slow twins are the linear reference over the original set (property tests
//! below compare every verdict and trace) and a fresh build after each change.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{BuildConfig, BuildError, Classifier, Compiler, SENTINEL, family_index};
use crate::chunked::Chunked;
use crate::flat::Flat;
use crate::lpm::{Lpm, WideLpm};
use crate::program::{
    Classify, EndpointId, Family, FlowKey, FlowVerdicts, Hit, Match, Nets, PolicySet, Program,
    ProgramId, TraceId,
};

use super::slot::BLOCK;

/// No binding.
const UNBOUND: u32 = u32::MAX;

/// Entries per shared chunk of the class and binding tables.
const CHUNK: usize = 256;

/// An endpoint binding: the endpoint and its ingress and egress programs.
type Binding = (EndpointId, Option<ProgramId>, Option<ProgramId>);

/// A prefix as the build sorts it: ancestors first, then what they contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Pfx {
    six: bool,
    addr: u128,
    len: u8,
}

impl Pfx {
    fn of(n: &IpNet) -> Pfx {
        match n {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Pfx {
                    six: false,
                    addr: (u32::from(n.addr()) & mask).into(),
                    len,
                }
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Pfx {
                    six: true,
                    addr: u128::from(n.addr()) & mask,
                    len,
                }
            }
        }
    }

    fn width(&self) -> u8 {
        if self.six { 128 } else { 32 }
    }

    fn contains(&self, o: &Pfx) -> bool {
        if self.six != o.six || self.len > o.len {
            return false;
        }
        let w = u32::from(self.width());
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.len))
            .unwrap_or(0)
            >> (128 - w);
        (self.addr ^ o.addr) & mask == 0
    }

    fn net(&self) -> IpNet {
        if self.six {
            IpNet::V6(Ipv6Net::new(self.addr.into(), self.len).expect("length checked"))
        } else {
            IpNet::V4(Ipv4Net::new((self.addr as u32).into(), self.len).expect("length checked"))
        }
    }
}

/// What the packet path reads per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hot {
    identity: u32,
    binding: u32,
}

impl Hot {
    /// The value of an IPv4 class in [`IdentityClassifier::front`]; `None` when the
    /// identity does not fit 31 bits.
    fn packed(self) -> Option<u64> {
        (self.identity < 1 << 31)
            .then_some(u64::from(self.identity) << 32 | u64::from(self.binding))
    }

    #[inline(always)]
    fn unpacked(v: u64) -> Hot {
        Hot {
            identity: (v >> 32) as u32,
            binding: v as u32,
        }
    }
}

/// What incremental changes read per class.
#[derive(Clone, Copy, Debug)]
struct Cold {
    /// The class's prefix (`None` for the two "no prefix" classes).
    prefix: Option<Pfx>,
    /// The class of the longest prefix strictly containing it (a family's "no
    /// prefix" class if none).
    parent: u32,
}

/// Why [`IdentityClassifier::with_host`] or [`IdentityClassifier::without_host`]
/// cannot give the next generation; a full build can.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostChangeRefused {
    /// The prefix is not a host prefix (/32, /128).
    #[error("{0} is not a host prefix")]
    NotHost(IpNet),
    /// The address already is a class of its own (a rule or a binding names it).
    #[error("{0} is already named by a rule or bound")]
    Known(IpNet),
    /// The address lies inside another binding's prefix.
    #[error("{0} lies inside the bound prefix {1}")]
    InsideBinding(IpNet, IpNet),
    /// The exemplar is not a bound host prefix of the same family.
    #[error("{0} is not a bound host prefix of the same family")]
    BadExemplar(IpNet),
    /// The prefixes containing the new address and the exemplar give different
    /// identities, so the new address would need an identity of its own.
    #[error("{0} would need a new identity")]
    NewIdentity(IpNet),
    /// The prefix to unbind is not a bound host class.
    #[error("{0} is not a bound host prefix")]
    NotBound(IpNet),
    /// A binding names a program the trees do not have.
    #[error("program {0} is not in the set")]
    UnknownProgram(u32),
    /// Too many classes or bindings to number.
    #[error("too many classes")]
    TooMany,
}

/// How a bound host was classified: its identity and that of the prefixes containing
/// it ([`IdentityClassifier::host_identity`]). Meaningful only for generations of the
/// build that gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostIdentity {
    six: bool,
    identity: u32,
    parent_identity: u32,
}

impl HostIdentity {
    /// The identity, with its family (IPv6: `true`), as
    /// [`IdentityClassifier::live_identities`] lists them.
    pub fn id(&self) -> (bool, u32) {
        (self.six, self.identity)
    }
}

/// Why [`IdentityClassifier::with_programs`] cannot give the next generation; a full
/// build can (or fails the same way).
#[derive(Debug, thiserror::Error)]
pub enum ProgramChangeRefused {
    /// An added program names an address list the build did not see, or a fresh list
    /// does not resolve to whole identities.
    #[error("an added program names an address list the build did not see")]
    NewList,
    /// These fresh lists (by index) are known in a form that no longer describes
    /// them: the identities it holds are not those of the addresses now. The caller
    /// that no longer names them in the known sense can forget them
    /// ([`IdentityClassifier::forgetting_lists`]) and hand them fresh again.
    #[error("fresh lists {0:?} are known in a form that no longer describes them")]
    StaleLists(Vec<usize>),
    /// A prefix to rebind is not a bound prefix.
    #[error("{0} is not a bound prefix")]
    NotBound(IpNet),
    /// A binding names a program neither the set nor the added ones have.
    #[error("program {0} is not in the set")]
    UnknownProgram(u32),
    /// Too many programs, parts or traces to number.
    #[error("too many programs or traces")]
    TooMany,
    /// The added programs' trees do not build.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// What the identity stage holds, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityStats {
    /// Classes (distinct prefixes, plus one "no prefix" class per family).
    pub classes: usize,
    /// Distinct identities over both families.
    pub identities: usize,
    /// Distinct address lists the rules name.
    pub lists: usize,
    /// Bytes of the LPM and the class and binding tables.
    pub stage_bytes: usize,
    /// Bytes of the trees ([`Classifier`]'s own count, summed over the parts).
    pub tree_bytes: usize,
    /// Tree parts: one after a build, one more per [`IdentityClassifier::with_programs`].
    pub parts: usize,
    /// Programs, referenced or not.
    pub programs: usize,
    /// Bytes of the address lists kept for [`IdentityClassifier::with_programs`]
    /// (control-side state shared by every generation of a build, not read by lookups;
    /// the set's own lists are kept, not copied, so a caller that keeps them too, as
    /// the control plane's lowering memo does, holds the same bytes).
    pub list_bytes: usize,
    /// Bytes of the identity-space programs the added tree parts keep, so that
    /// [`IdentityClassifier::with_programs_merged`] can build the last part again
    /// (their address lists are counted in `list_bytes`; not read by lookups).
    pub part_program_bytes: usize,
    /// Bytes of the state the added parts' compilers keep for the next merge (build
    /// indexes and arena; not read by lookups).
    pub part_compiler_bytes: usize,
    /// Ids of each identity's block, its own included (1: the build kept none free;
    /// see [`IdentityClassifier::with_new_host_identity`]).
    pub block_ids: usize,
    /// The most ids taken from one block since the build: at `block_ids - 1`, a new
    /// identity split from that one is refused until the next build.
    pub most_split: usize,
}

/// A [`PolicySet`] compiled as identity stage + decision trees. Classifies exactly as
/// [`Classifier`] and the linear reference do on the same set.
#[derive(Clone, Debug)]
pub struct IdentityClassifier {
    /// Address → class. Read by changes, and by IPv6 lookups; its IPv4 table keeps
    /// the compact 8-bit first level.
    lpm: Lpm<8>,
    /// IPv4 address → its class's [`Hot`], packed: what an IPv4 lookup reads, in at
    /// most three dependent loads and no class-table read. Every address has a value
    /// (the "no prefix" class's under `0.0.0.0/0`).
    front: WideLpm,
    hot: Flat<Hot>,
    /// Shared between generations: the largest table, and not read by lookups.
    cold: Chunked<Cold, CHUNK>,
    /// Flat like `hot`; a host removed leaves it as it is (no class names the
    /// binding any more), a host added appends one.
    bindings: Flat<Binding>,
    /// The trees, in the order they were built; a part's trace ids follow the earlier
    /// parts' ones.
    parts: Vec<Part>,
    /// Per program: its part and its index in that part's trees.
    programs: Arc<Vec<(u32, u32)>>,
    /// The build's address lists, then those later changes resolved (one layer per
    /// change that named new ones).
    lists: Vec<Arc<Lists>>,
    /// The free ids after each identity: see [`Blocks`].
    blocks: Blocks,
    /// Host prefixes unbound as *ghosts* ([`IdentityClassifier::without_ghost_hosts`]),
    /// each with its class (a tombstone that keeps its identity and parent): no
    /// address reaches them, but a fresh list may name them
    /// ([`IdentityClassifier::resolve`]).
    ghosts: Arc<HashMap<Pfx, u32>>,
    stats: IdentityStats,
}

/// A build numbers identities `0, n, 2n, ...` per family and keeps the `n - 1` ids
/// after each free (its *block*): every list form that holds an identity holds its
/// whole block (the same prefixes, `log2 n` bits shorter, as the identity alone
/// would need), so an id taken from the block later is read by every tree built so
/// far as that identity. [`IdentityClassifier::with_new_host_identity`] gives a new
/// host the next free id of a chosen identity's block (the prefixes' containing it,
/// or a host's the caller names): a new identity that every existing program reads
/// as that one, while the programs the caller builds with fresh lists tell them
/// apart. Later list forms ([`IdentityClassifier::resolve`]) hold a split identity
/// as its base id and the ids still free, not those taken since.
#[derive(Clone, Debug)]
struct Blocks {
    /// Ids per block, a power of two (1: none free).
    ids: u32,
    /// Per family, one past the build's last block.
    end: [u32; 2],
    /// The next free id of each block ids were taken from, by family and base id.
    taken: Arc<HashMap<(bool, u32), u32>>,
}

impl Blocks {
    /// The next free id and the end of the block whose identity (base id) is `id`,
    /// if `id` is one.
    fn of(&self, six: bool, id: u32) -> Option<(u32, u32)> {
        if self.ids <= 1 || !id.is_multiple_of(self.ids) || id >= self.end[usize::from(six)] {
            return None;
        }
        let next = self.taken.get(&(six, id)).copied().unwrap_or(id + 1);
        Some((next, id + self.ids))
    }
}

/// Ids per block ([`Blocks`]): an identity can be split 255 times before a build
/// (the compaction of a live generation is one) numbers the ids afresh.
const BLOCK_IDS: u32 = 256;

/// Trees over some of the programs.
#[derive(Clone, Debug)]
struct Part {
    trees: Arc<Classifier>,
    /// What this part's trace ids are offset by in [`Classify::trace`].
    trace_base: u32,
    /// The identity-space programs the trees were built from, by index in the part
    /// (parts a change added: [`IdentityClassifier::with_programs_merged`] builds
    /// the last one again from them); empty for the build's part.
    programs: Arc<[Program]>,
    /// Bytes of `programs` ([`Program::heap_bytes`] and the structs).
    program_bytes: usize,
    /// The compiler that built a part a change added, with its state, for
    /// [`IdentityClassifier::with_programs_merged`] to take when it builds this part
    /// again: the subtrees whose candidates did not change are reused. Taken, not
    /// shared: a generation built from this one without it (the other generation
    /// took it, or a lock failed) builds afresh, with the same lookups. Not read by
    /// lookups; the lock is taken only by changes.
    compiler: Arc<std::sync::Mutex<Option<Compiler>>>,
    /// Bytes of that compiler's kept state when it was put there.
    compiler_bytes: usize,
}

/// What [`IdentityClassifier::resolve`] gives.
#[derive(Debug, Default)]
struct Resolved {
    /// Per list, its identity-space form.
    forms: Vec<Vec<IpNet>>,
    /// The ghosts some list holds otherwise than their identity's place in its form.
    split: Vec<IpNet>,
    /// The ghosts whose identity no live class has, with it.
    pure: Vec<(IpNet, (bool, u32))>,
}

/// Fresh address lists resolved by one generation
/// ([`IdentityClassifier::resolve_fresh`]), for a change to that generation
/// ([`IdentityClassifier::with_fresh_programs`]).
#[derive(Debug)]
pub struct FreshLists {
    /// The lists the generation did not know, with their forms.
    layer: Lists,
    /// The ghosts these lists hold otherwise than their identities' forms.
    split: Vec<IpNet>,
    /// The generation's [`IdentityClassifier::stamp`].
    of: (usize, usize, usize, usize),
}

impl FreshLists {
    /// The ghost prefixes ([`IdentityClassifier::without_ghost_hosts`]) that one of
    /// the lists holds otherwise than the list's form holds the ghost's identity (a
    /// list names the ghost and not another class of its identity, or the other way
    /// round; or a known form kept holds a ghost-only identity otherwise): a host
    /// given that identity later would not be read as the lists read the ghost.
    pub fn split_ghosts(&self) -> &[IpNet] {
        &self.split
    }
}

/// Where a program dropped by [`IdentityClassifier::with_programs_merged`] is: in
/// no part.
const DROPPED: (u32, u32) = (u32::MAX, u32::MAX);

/// Every address list the build saw, and its identity-space form. The lists are the
/// set's own (shared, not copied).
#[derive(Debug, Default)]
struct Lists {
    ids: HashMap<Nets, u32>,
    /// `ids` by the address of each key's allocation ([`ptr_key`]): the keys are
    /// kept alive here, so an address names one list while `Lists` lives, and a list
    /// handed in again as the same shared allocation (the lowering memo's interned
    /// lists are) is found without hashing its addresses.
    by_ptr: HashMap<(usize, usize), u32>,
    /// Each list's form; `None` for a list this layer forgets
    /// ([`IdentityClassifier::forgetting_lists`]): unknown from here on, whatever an
    /// earlier layer says.
    rewritten: Vec<Option<Nets>>,
}

impl Lists {
    /// The lists `ids` (each with its index in `rewritten`) and their forms.
    fn new(ids: HashMap<Nets, u32>, rewritten: Vec<Nets>) -> Lists {
        let by_ptr = ids.iter().map(|(k, &i)| (ptr_key(k), i)).collect();
        Lists {
            ids,
            by_ptr,
            rewritten: rewritten.into_iter().map(Some).collect(),
        }
    }

    /// Adds list `l` with identity-space form `form` (`None`: forgotten), unless it
    /// is in already.
    fn insert(&mut self, l: &Nets, form: Option<Nets>) {
        if self.ids.contains_key(&**l) {
            return;
        }
        let i = self.rewritten.len() as u32;
        self.ids.insert(l.clone(), i);
        self.by_ptr.insert(ptr_key(l), i);
        self.rewritten.push(form);
    }

    /// Also forgets the allocation of `l` (a list this layer holds by content) that
    /// the key `k`, an earlier layer's, is.
    fn forget_alloc(&mut self, l: &Nets, k: &Nets) {
        if let Some(&i) = self.ids.get(&**l) {
            self.by_ptr.insert(ptr_key(k), i);
        }
    }

    fn bytes(&self) -> usize {
        let nets = |v: &Nets| v.len() * size_of::<IpNet>() + size_of::<Nets>();
        self.ids.keys().map(nets).sum::<usize>()
            + self.rewritten.iter().flatten().map(nets).sum::<usize>()
            + self.by_ptr.len() * size_of::<((usize, usize), u32)>()
    }

    /// The form of list `v`: by its allocation if `Lists` holds that one, else by
    /// content (`Some(None)`: this layer forgets it).
    fn get(&self, v: &Nets) -> Option<Option<&Nets>> {
        self.by_alloc(v).or_else(|| self.by_content(v))
    }

    /// The form of the list whose allocation `v` is, if `Lists` holds it.
    fn by_alloc(&self, v: &Nets) -> Option<Option<&Nets>> {
        let i = *self.by_ptr.get(&ptr_key(v))?;
        self.rewritten.get(i as usize).map(Option::as_ref)
    }

    /// The form of a list with `v`'s addresses.
    fn by_content(&self, v: &[IpNet]) -> Option<Option<&Nets>> {
        let i = *self.ids.get(v)?;
        self.rewritten.get(i as usize).map(Option::as_ref)
    }
}

/// A shared list by address: two equal keys are the same list (while it is alive).
/// Lists are looked up by content once per distinct allocation, not once per rule.
fn ptr_key(n: &Nets) -> (usize, usize) {
    (Arc::as_ptr(n) as *const IpNet as usize, n.len())
}

/// `programs` with every address list replaced by its identity-space form (`form`,
/// asked once per distinct shared list); `None` if one has none.
fn rewrite<'a>(
    mut programs: Vec<Program>,
    form: impl Fn(&Nets) -> Option<&'a Nets>,
) -> Option<Vec<Program>> {
    // Every list of `programs` is alive until it is replaced, and `done` keeps the
    // replaced ones alive, so an address names one list throughout.
    let mut done: HashMap<(usize, usize), (Nets, Nets)> = HashMap::new();
    for p in &mut programs {
        for m in all_matches_mut(p) {
            for v in [
                m.src_nets.as_mut(),
                Some(&mut m.not_src_nets),
                m.dst_nets.as_mut(),
                Some(&mut m.not_dst_nets),
            ]
            .into_iter()
            .flatten()
            {
                if v.is_empty() {
                    continue;
                }
                let k = ptr_key(v);
                let f = match done.get(&k) {
                    Some((_, f)) => f.clone(),
                    None => {
                        let f = form(v)?.clone();
                        done.insert(k, (v.clone(), f.clone()));
                        f
                    }
                };
                *v = f;
            }
        }
    }
    Some(programs)
}

/// The fewest prefixes of the identity space covering `members` (sorted (family,
/// identity) pairs), each identity with the free ids of its block ([`Blocks`]): one
/// [`cover`] per run of consecutive ids.
fn identity_prefixes(blocks: &Blocks, members: &[(bool, u32)]) -> Vec<IpNet> {
    let mut runs: Vec<(bool, u32, u32)> = Vec::with_capacity(members.len());
    for &(six, id) in members {
        runs.push((six, id, id));
        if let Some((next, end)) = blocks.of(six, id)
            && next < end
        {
            runs.push((six, next, end - 1));
        }
    }
    // Sorted but for ids taken from a block (members after its base, below its
    // free ids); adjacent runs are merged below.
    runs.sort_unstable();
    let mut out = Vec::new();
    let mut i = 0;
    while i < runs.len() {
        let (six, lo, mut hi) = runs[i];
        while i + 1 < runs.len() && runs[i + 1].0 == six && runs[i + 1].1 <= hi.saturating_add(1) {
            hi = hi.max(runs[i + 1].2);
            i += 1;
        }
        cover(six, lo, hi, &mut out);
        i += 1;
    }
    out
}

/// Whether two identity-space forms hold the same identities among `live` (sorted):
/// an identity no class has any more (a spare endpoint's once it is unbound, a
/// removed pod's) is reached by no address, so a known form that still holds it
/// describes a list whose resolution no longer does; nor do free ids of a block.
fn same_live_members(live: &[(bool, u32)], a: &[IpNet], b: &[IpNet]) -> bool {
    let (ra, rb) = (form_ranges(a), form_ranges(b));
    live.iter()
        .all(|&x| ranges_hold(&ra, x) == ranges_hold(&rb, x))
}

/// An identity-space form as sorted (family, first id, last id) ranges.
fn form_ranges(form: &[IpNet]) -> Vec<(bool, u64, u64)> {
    let mut r: Vec<(bool, u64, u64)> = form
        .iter()
        .map(|n| {
            let p = Pfx::of(n);
            let span = u32::from(p.width() - p.len);
            let lo = u64::try_from(p.addr).unwrap_or(u64::MAX);
            let hi = lo.saturating_add(1u64.checked_shl(span).map_or(u64::MAX, |b| b - 1));
            (p.six, lo, hi)
        })
        .collect();
    r.sort_unstable();
    r
}

/// Whether [`form_ranges`] `r` hold identity `id` of family `six`.
fn ranges_hold(r: &[(bool, u64, u64)], (six, id): (bool, u32)) -> bool {
    let id = u64::from(id);
    // The last range starting at or before the id.
    let i = r.partition_point(|&(s, lo, _)| (s, lo) <= (six, id));
    i > 0 && r[i - 1].0 == six && r[i - 1].2 >= id
}

/// Addresses a rule field names, per field of [`Match`].
fn fields(m: &Match) -> [Option<&Nets>; 4] {
    [
        m.src_nets.as_ref(),
        Some(&m.not_src_nets),
        m.dst_nets.as_ref(),
        Some(&m.not_dst_nets),
    ]
}

fn all_matches(p: &Program) -> impl Iterator<Item = &Match> {
    p.tiers
        .iter()
        .flat_map(|t| &t.policies)
        .chain(&p.profiles)
        .flat_map(|pol| &pol.rules)
        .map(|r| &r.matches)
}

fn all_matches_mut(p: &mut Program) -> impl Iterator<Item = &mut Match> {
    p.tiers
        .iter_mut()
        .flat_map(|t| &mut t.policies)
        .chain(&mut p.profiles)
        .flat_map(|pol| &mut pol.rules)
        .map(|r| &mut r.matches)
}

/// The fewest prefixes covering the ids `lo..=hi` of a family's identity space
/// (identity ids are below 2^32 in both families).
fn cover(six: bool, lo: u32, hi: u32, out: &mut Vec<IpNet>) {
    let width: u32 = if six { 128 } else { 32 };
    let (mut lo, hi) = (u64::from(lo), u64::from(hi));
    while lo <= hi {
        // The largest aligned block starting at lo that stays within hi.
        let mut bits = if lo == 0 {
            32
        } else {
            lo.trailing_zeros().min(32)
        };
        while lo + (1u64 << bits) - 1 > hi {
            bits -= 1;
        }
        out.push(
            Pfx {
                six,
                addr: lo.into(),
                len: (width - bits) as u8,
            }
            .net(),
        );
        lo += 1u64 << bits;
    }
}

impl IdentityClassifier {
    /// Compiles `set`: the identity stage, then [`Classifier::build`] of the rewritten
    /// programs within `cfg`. Bindings are checked as [`Classifier::build`] checks them.
    pub fn build(set: &PolicySet, cfg: &BuildConfig) -> Result<IdentityClassifier, BuildError> {
        // 1. Distinct address lists (as written: equal lists share an id). A shared
        // list is hashed by content once, however many rules name it.
        let mut by_ptr: HashMap<(usize, usize), u32> = HashMap::new();
        let mut list_ids: HashMap<&[IpNet], u32> = HashMap::new();
        let mut lists: Vec<&Nets> = Vec::new();
        for p in &set.programs {
            for m in all_matches(p) {
                for f in fields(m).into_iter().flatten() {
                    if f.is_empty() {
                        continue;
                    }
                    by_ptr.entry(ptr_key(f)).or_insert_with(|| {
                        *list_ids.entry(f).or_insert_with(|| {
                            lists.push(f);
                            (lists.len() - 1) as u32
                        })
                    });
                }
            }
        }
        drop(by_ptr);

        // 2. Classes: every prefix of a list or a binding, sorted ancestors first.
        let mut pfx: Vec<Pfx> = lists
            .iter()
            .flat_map(|l| l.iter().map(Pfx::of))
            .chain(set.endpoints.iter().map(|b| Pfx::of(&b.net)))
            .collect();
        pfx.sort_unstable();
        pfx.dedup();
        let class_of = |p: &Pfx| pfx.binary_search(p).map(|i| i + 2).unwrap_or(0);
        let n = pfx.len() + 2;
        if n >= 1 << 31 {
            return Err(BuildError::OverBudget {
                budget: cfg.memory_budget,
                program: 0,
                family: Family::V4,
                what: "identity classes",
            });
        }

        // Lists naming each class directly.
        let mut direct: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (id, l) in lists.iter().enumerate() {
            for q in l.iter() {
                direct[class_of(&Pfx::of(q))].push(id as u32);
            }
        }
        // Bindings, checked.
        let mut bindings = Vec::with_capacity(set.endpoints.len());
        let mut binding_of = vec![UNBOUND; n];
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
            let c = class_of(&Pfx::of(&b.net));
            if binding_of[c] != UNBOUND {
                return Err(BuildError::DuplicateEndpoint { net: b.net.trunc() });
            }
            binding_of[c] = bindings.len() as u32;
            bindings.push((b.endpoint, b.ingress, b.egress));
        }

        // 3. Signatures: a class is in its own lists and its parent's.
        let mut cold = vec![
            Cold {
                prefix: None,
                parent: 0,
            },
            Cold {
                prefix: None,
                parent: 1,
            },
        ];
        let mut sig_of: Vec<u32> = vec![0, 1]; // class → signature id
        let mut sigs: Vec<(bool, Vec<u32>)> = vec![(false, Vec::new()), (true, Vec::new())];
        let mut sig_ids: HashMap<(bool, Vec<u32>), u32> = HashMap::new();
        sig_ids.insert((false, Vec::new()), 0);
        sig_ids.insert((true, Vec::new()), 1);
        let mut stack: Vec<usize> = Vec::new(); // class indices of the open ancestors
        for (i, p) in pfx.iter().enumerate() {
            let c = i + 2;
            while let Some(&top) = stack.last() {
                if pfx[top - 2].contains(p) {
                    break;
                }
                stack.pop();
            }
            let parent = stack.last().copied().unwrap_or(usize::from(p.six));
            if binding_of[c] == UNBOUND {
                binding_of[c] = binding_of[parent];
            }
            let d = &mut direct[c];
            let sig = if d.is_empty() {
                sig_of[parent]
            } else {
                let mut s = sigs[sig_of[parent] as usize].1.clone();
                s.append(d);
                s.sort_unstable();
                s.dedup();
                let key = (p.six, s);
                match sig_ids.get(&key) {
                    Some(&id) => id,
                    None => {
                        let id = sigs.len() as u32;
                        sigs.push(key.clone());
                        sig_ids.insert(key, id);
                        id
                    }
                }
            };
            sig_of.push(sig);
            cold.push(Cold {
                prefix: Some(*p),
                parent: parent as u32,
            });
            stack.push(c);
        }
        drop(sig_ids);

        // 4. Identities: signatures numbered per family in signature order (the empty
        // signature, "no list", is identity 0 of each family), `BLOCK_IDS` apart
        // (fewer if the ids could overflow): the ids between are free (`Blocks`).
        let mut order: Vec<u32> = (0..sigs.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| sigs[a as usize].cmp(&sigs[b as usize]));
        let per_family = (sigs.iter().filter(|s| s.0).count() as u64)
            .max(sigs.iter().filter(|s| !s.0).count() as u64);
        let mut ids = BLOCK_IDS;
        while ids > 1 && per_family * u64::from(ids) > 1 << 30 {
            ids /= 2;
        }
        let mut identity_of_sig = vec![0u32; sigs.len()];
        let mut next = [0u32; 2];
        for &s in &order {
            let f = usize::from(sigs[s as usize].0);
            identity_of_sig[s as usize] = next[f];
            next[f] += ids;
        }
        let blocks = Blocks {
            ids,
            end: next,
            taken: Arc::default(),
        };

        // 5. Each list's identities, as prefixes of the identity space.
        let mut members: Vec<Vec<(bool, u32)>> = vec![Vec::new(); lists.len()];
        for &s in &order {
            let (six, ls) = &sigs[s as usize];
            for &l in ls {
                members[l as usize].push((*six, identity_of_sig[s as usize]));
            }
        }
        let rewritten: Vec<Nets> = members
            .iter()
            .map(|m| identity_prefixes(&blocks, m).into())
            .collect();

        // 6. The trees over the rewritten programs.
        let table = Lists::new(
            list_ids
                .values()
                .map(|&id| (lists[id as usize].clone(), id))
                .collect(),
            rewritten,
        );
        let programs = rewrite(set.programs.clone(), |v| table.get(v).flatten())
            .expect("every list of the set is in the table");
        let trees = Classifier::build(
            &PolicySet {
                programs,
                endpoints: Vec::new(),
            },
            cfg,
        )?;

        let hot: Vec<Hot> = sig_of
            .iter()
            .zip(&binding_of)
            .map(|(&s, &b)| Hot {
                identity: identity_of_sig[s as usize],
                binding: b,
            })
            .collect();
        let entries: Vec<(IpNet, u32)> = pfx
            .iter()
            .enumerate()
            .map(|(i, p)| (p.net(), (i + 2) as u32))
            .collect();
        let too_many = || BuildError::OverBudget {
            budget: cfg.memory_budget,
            program: 0,
            family: Family::V4,
            what: "identity classes",
        };
        let lpm = Lpm::new(&entries).map_err(|_| too_many())?;
        let mut front_entries = vec![(Ipv4Net::default(), hot[0].packed().ok_or_else(too_many)?)];
        for (p, h) in pfx.iter().zip(&hot[2..]) {
            if let IpNet::V4(n) = p.net() {
                let v = h.packed().ok_or_else(too_many)?;
                // A class at 0.0.0.0/0 takes the place of the "no prefix" default.
                match n.prefix_len() {
                    0 => front_entries[0].1 = v,
                    _ => front_entries.push((n, v)),
                }
            }
        }
        let front = WideLpm::new(&front_entries).map_err(|_| too_many())?;
        let mut c = IdentityClassifier {
            lpm,
            front,
            hot: Flat::from_vec(hot),
            cold: Chunked::from_slice(&cold),
            bindings: Flat::from_vec(bindings),
            programs: Arc::new((0..set.programs.len() as u32).map(|i| (0, i)).collect()),
            stats: IdentityStats {
                classes: n,
                identities: sigs.len(),
                lists: lists.len(),
                stage_bytes: 0,
                tree_bytes: trees.stats().bytes,
                parts: 1,
                programs: set.programs.len(),
                list_bytes: table.bytes(),
                part_program_bytes: 0,
                part_compiler_bytes: 0,
                block_ids: ids as usize,
                most_split: 0,
            },
            parts: vec![Part {
                trees: Arc::new(trees),
                trace_base: 0,
                programs: Arc::new([]),
                program_bytes: 0,
                compiler: Arc::default(),
                compiler_bytes: 0,
            }],
            lists: vec![Arc::new(table)],
            blocks,
            ghosts: Arc::default(),
        };
        c.stats.stage_bytes = c.stage_bytes();
        if c.stats.stage_bytes + c.stats.tree_bytes > cfg.memory_budget {
            return Err(BuildError::OverBudget {
                budget: cfg.memory_budget,
                program: 0,
                family: Family::V4,
                what: "identity stage",
            });
        }
        Ok(c)
    }

    fn stage_bytes(&self) -> usize {
        self.lpm.bytes()
            + self.front.bytes()
            + self.hot.bytes()
            + self.cold.bytes()
            + self.bindings.bytes()
    }

    /// Sizes of the identity stage and the trees.
    pub fn stats(&self) -> &IdentityStats {
        &self.stats
    }

    /// The endpoint and programs bound at exactly the prefix `net` (not inherited
    /// from a containing bound prefix), if any.
    pub fn binding(
        &self,
        net: IpNet,
    ) -> Option<(EndpointId, Option<ProgramId>, Option<ProgramId>)> {
        let p = Pfx::of(&net);
        let c = self.class_index(&p) as usize;
        let b = self.hot[c].binding;
        if self.cold[c].prefix != Some(p) || b == UNBOUND {
            return None;
        }
        let up = self.cold[c].parent as usize;
        if up != c && self.hot[up].binding == b {
            return None;
        }
        self.bindings.get(b as usize).copied()
    }

    /// The next generation with `programs` added (numbered after this set's
    /// programs, in order) and the bindings of the prefixes in `rebind` pointed at
    /// other programs (`(prefix, ingress, egress)`, each prefix exactly a bound
    /// prefix). The added programs' trees are built as a new part; every other tree,
    /// and the identity stage, are shared or copied unchanged, so lookups of every
    /// other program give what they gave. Programs no binding names any more stay
    /// (a full build drops them, and [`IdentityClassifier::with_programs_merged`]
    /// those of the part it builds again).
    ///
    /// An address list of `programs` is either one this classifier knows (the
    /// build's, or one an earlier change resolved: its identity-space form follows the
    /// host changes since, as [`IdentityClassifier::with_host`] and
    /// [`IdentityClassifier::without_host`] define them), or one of `fresh`: lists
    /// that name exactly their addresses in this generation. A fresh list is resolved
    /// to the identities of the classes it covers ([`IdentityClassifier::resolve`]);
    /// it is refused ([`ProgramChangeRefused::NewList`]) when one of its prefixes is
    /// no class, when an identity lies only partly inside it (the addresses would
    /// need identities of their own: a full build does that); and
    /// ([`ProgramChangeRefused::StaleLists`]) when it is a known list that the known
    /// form no longer describes (identities no class has any more aside: no address
    /// reaches them), since one list cannot take two forms: a caller that names it
    /// only as it is now forgets it first ([`IdentityClassifier::forgetting_lists`]).
    /// Also refused when a prefix in
    /// `rebind` is not a bound prefix or a program id is unknown; the trees of the
    /// added programs can fail to build as [`Classifier::build`] does.
    pub fn with_programs(
        &self,
        programs: Vec<Program>,
        fresh: &[Nets],
        rebind: &[(IpNet, Option<ProgramId>, Option<ProgramId>)],
        cfg: &BuildConfig,
    ) -> Result<IdentityClassifier, ProgramChangeRefused> {
        let fresh = self.resolve_fresh(fresh)?;
        self.adding_programs(programs, fresh.layer, rebind, cfg, None)
            .map(|(next, _)| next)
    }

    /// [`IdentityClassifier::with_programs`], but when the last part is one a change
    /// added and at most as many of its programs are still bound (after `rebind`)
    /// or in `keep` as `programs` has, that part is built again with those programs
    /// and `programs` instead of a part being added: the part count stays, for at
    /// most twice the trees of the change. Its programs no binding names any more
    /// and not in `keep` are dropped (in no part; returned, ascending): the caller
    /// must not bind them again (a later change naming one is refused as an unknown
    /// program). `keep` holds the programs the caller binds next (a host added
    /// after this change, to a program it already had). A stream
    /// of changes that each rebind the programs of the one before (new peer classes
    /// of one namespace's pods, say) then keeps one part instead of adding one each.
    pub fn with_programs_merged(
        &self,
        programs: Vec<Program>,
        fresh: &[Nets],
        rebind: &[(IpNet, Option<ProgramId>, Option<ProgramId>)],
        keep: &[ProgramId],
        cfg: &BuildConfig,
    ) -> Result<(IdentityClassifier, Vec<ProgramId>), ProgramChangeRefused> {
        let fresh = self.resolve_fresh(fresh)?;
        self.adding_programs(programs, fresh.layer, rebind, cfg, Some(keep))
    }

    /// The next generation with `lists` forgotten: by content and by allocation (the
    /// given ones, and those of the lists of equal content it knew), no form is known
    /// for them, so an added program naming one is refused
    /// ([`ProgramChangeRefused::NewList`]) unless the change hands it as fresh, which
    /// resolves it again as its addresses are now. The trees and the identity stage are
    /// shared unchanged: programs already built keep the forms they were built with.
    ///
    /// For a caller whose known form of a list has gone stale
    /// ([`ProgramChangeRefused::StaleLists`]: a change since made its addresses' identities
    /// others) and that names the list, from then on, only as exactly its addresses
    /// (every rule that named it in the old sense lowered again or gone).
    pub fn forgetting_lists(&self, lists: &[Nets]) -> IdentityClassifier {
        let mut layer = Lists::default();
        for l in lists.iter().filter(|l| !l.is_empty()) {
            layer.insert(l, None);
            for earlier in self.lists.iter() {
                if let Some((k, _)) = earlier.ids.get_key_value(&**l) {
                    layer.forget_alloc(l, k);
                }
            }
        }
        let mut next = self.clone();
        if !layer.ids.is_empty() {
            next.stats.list_bytes += layer.bytes();
            next.lists.push(Arc::new(layer));
        }
        next
    }

    /// The programs of the last part a binding of this generation names, or `keep`
    /// does, by their index in it (ascending); `None` for the build's part.
    fn bound_in_last_part(&self, keep: &[ProgramId]) -> Option<Vec<u32>> {
        let last = self.parts.len().checked_sub(1).filter(|&l| l > 0)? as u32;
        let mut bound = vec![false; self.parts[last as usize].programs.len()];
        // The programs every bound class's binding names, then `keep`.
        let named = (0..self.hot.len())
            .map(|c| self.hot[c].binding)
            .filter(|&b| b != UNBOUND)
            .filter_map(|b| self.bindings.get(b as usize))
            .flat_map(|&(_, ingress, egress)| [ingress, egress].into_iter().flatten())
            .chain(keep.iter().copied());
        for p in named {
            if let Some(&(part, local)) = self.programs.get(p.0 as usize)
                && part == last
                && let Some(x) = bound.get_mut(local as usize)
            {
                *x = true;
            }
        }
        Some(
            (0..bound.len() as u32)
                .filter(|&i| bound[i as usize])
                .collect(),
        )
    }

    /// `fresh` resolved to their forms in this generation, for a change to it
    /// ([`IdentityClassifier::with_fresh_programs`]): refused as
    /// [`IdentityClassifier::with_programs`] says, before any program is handed over
    /// (a caller that forgets stale lists can then try again with the same programs).
    pub fn resolve_fresh(&self, fresh: &[Nets]) -> Result<FreshLists, ProgramChangeRefused> {
        let Resolved {
            forms,
            mut split,
            pure,
        } = self.resolve(fresh).ok_or(ProgramChangeRefused::NewList)?;
        let mut layer = Lists::default();
        // Computed once, when a known form differs from a resolution.
        let mut live: Option<Vec<(bool, u32)>> = None;
        let mut stale = Vec::new();
        for (i, (l, form)) in fresh.iter().zip(forms).enumerate() {
            if l.is_empty() {
                continue;
            }
            match self.known(l) {
                Some(k)
                    if **k != *form
                        && !same_live_members(
                            live.get_or_insert_with(|| self.live_identities()),
                            k,
                            &form,
                        ) =>
                {
                    stale.push(i);
                }
                Some(k) if **k != *form && !pure.is_empty() => {
                    // Kept: a ghost-only identity the known form holds otherwise
                    // than the list's addresses now splits its ghosts.
                    let (rk, rf) = (form_ranges(k), form_ranges(&form));
                    for (net, key) in &pure {
                        if ranges_hold(&rk, *key) != ranges_hold(&rf, *key) {
                            split.push(*net);
                        }
                    }
                }
                Some(_) => {}
                None => layer.insert(l, Some(form.into())),
            }
        }
        if !stale.is_empty() {
            return Err(ProgramChangeRefused::StaleLists(stale));
        }
        split.sort_unstable();
        split.dedup();
        Ok(FreshLists {
            layer,
            split,
            of: self.stamp(),
        })
    }

    /// What tells generations apart for [`FreshLists`]: the program table, the list
    /// layers, and the classes made and live (a host bound appends a class, one
    /// unbound leaves a tombstone: each host change moves one of the two counts).
    fn stamp(&self) -> (usize, usize, usize, usize) {
        (
            Arc::as_ptr(&self.programs) as usize,
            self.lists.len(),
            self.hot.len(),
            self.stats.classes,
        )
    }

    /// [`IdentityClassifier::with_programs`] (`merge`: `None`) or
    /// [`IdentityClassifier::with_programs_merged`] (`Some(keep)`) with the fresh
    /// lists resolved by this generation ([`IdentityClassifier::resolve_fresh`]: the
    /// caller resolves and changes one generation; lists resolved before a change of
    /// its programs, list layers or classes are refused as new).
    pub fn with_fresh_programs(
        &self,
        programs: Vec<Program>,
        fresh: FreshLists,
        rebind: &[(IpNet, Option<ProgramId>, Option<ProgramId>)],
        merge: Option<&[ProgramId]>,
        cfg: &BuildConfig,
    ) -> Result<(IdentityClassifier, Vec<ProgramId>), ProgramChangeRefused> {
        if fresh.of != self.stamp() {
            return Err(ProgramChangeRefused::NewList);
        }
        self.adding_programs(programs, fresh.layer, rebind, cfg, merge)
    }

    fn adding_programs(
        &self,
        programs: Vec<Program>,
        layer: Lists,
        rebind: &[(IpNet, Option<ProgramId>, Option<ProgramId>)],
        cfg: &BuildConfig,
        merge: Option<&[ProgramId]>,
    ) -> Result<(IdentityClassifier, Vec<ProgramId>), ProgramChangeRefused> {
        let added = programs.len();
        let rewritten = rewrite(programs, |v| {
            self.known(v).or_else(|| layer.get(v).flatten())
        })
        .ok_or(ProgramChangeRefused::NewList)?;
        let total = self.programs.len() + added;
        let part = u32::try_from(self.parts.len()).map_err(|_| ProgramChangeRefused::TooMany)?;
        if total >= 1 << 31 {
            return Err(ProgramChangeRefused::TooMany);
        }
        let mut next = self.clone();
        for &(net, ingress, egress) in rebind {
            for q in [ingress, egress].into_iter().flatten() {
                if q.0 as usize >= total || self.programs.get(q.0 as usize) == Some(&DROPPED) {
                    return Err(ProgramChangeRefused::UnknownProgram(q.0));
                }
            }
            let p = Pfx::of(&net);
            let c = self.class_index(&p);
            let b = self.hot[c as usize].binding;
            if self.cold[c as usize].prefix != Some(p) || b == UNBOUND {
                return Err(ProgramChangeRefused::NotBound(net));
            }
            // The class's own binding, not one it inherits from a containing prefix.
            let up = self.cold[c as usize].parent;
            if up != c && self.hot[up as usize].binding == b {
                return Err(ProgramChangeRefused::NotBound(net));
            }
            if let Some(&(id, _, _)) = next.bindings.get(b as usize) {
                next.bindings.set(b as usize, (id, ingress, egress));
            }
        }
        // Merged: the last part's programs still bound (after the rebind), then the
        // added ones, in place of the last part.
        let kept =
            merge.and_then(|keep| next.bound_in_last_part(keep).filter(|k| k.len() <= added));
        let (rewritten, part, old) = match &kept {
            Some(kept) => {
                let last = self.parts.len() - 1;
                let was = &self.parts[last].programs;
                let mut all: Vec<Program> = kept.iter().map(|&i| was[i as usize].clone()).collect();
                all.extend(rewritten);
                (all, last as u32, self.parts.last())
            }
            None => (rewritten, part, None),
        };
        let set = PolicySet {
            programs: rewritten,
            endpoints: Vec::new(),
        };
        // An incremental compiler, starting afresh once its garbage reaches its
        // fresh size: a part's trees are small, and its classifier carries the
        // compiler's whole arena.
        let mut comp = old
            .and_then(|o| o.compiler.lock().ok()?.take())
            .filter(|c| c.config() == cfg)
            .unwrap_or_else(|| Compiler::new(*cfg).with_garbage_slack(0));
        let trees = comp.build(&set)?;
        let compiler_bytes = comp.kept_bytes();
        let rewritten = set.programs;
        let last = self.parts.last().expect("a build has one part");
        let trace_base = match old {
            Some(old) => old.trace_base,
            None => u32::try_from(last.trees.traces.len())
                .ok()
                .and_then(|n| n.checked_add(last.trace_base))
                .ok_or(ProgramChangeRefused::TooMany)?,
        };
        if u64::from(trace_base) + trees.traces.len() as u64 > u64::from(u32::MAX) {
            return Err(ProgramChangeRefused::TooMany);
        }
        let bytes = trees.stats().bytes;
        let program_bytes = rewritten
            .iter()
            .map(|p| size_of::<Program>() + p.heap_bytes())
            .sum();
        let built = Part {
            trees: Arc::new(trees),
            trace_base,
            programs: rewritten.into(),
            program_bytes,
            compiler: Arc::new(std::sync::Mutex::new(Some(comp))),
            compiler_bytes,
        };
        let mut at = Vec::with_capacity(total);
        at.extend_from_slice(&self.programs);
        let mut dropped = Vec::new();
        let first_new = match (&kept, old) {
            (Some(kept), Some(old)) => {
                next.stats.tree_bytes -= old.trees.stats().bytes;
                next.stats.part_program_bytes -= old.program_bytes;
                next.stats.part_compiler_bytes -= old.compiler_bytes;
                next.parts.pop();
                for (id, loc) in at.iter_mut().enumerate() {
                    if loc.0 != part {
                        continue;
                    }
                    match kept.binary_search(&loc.1) {
                        Ok(i) => loc.1 = i as u32,
                        Err(_) => {
                            *loc = DROPPED;
                            dropped.push(ProgramId(id as u32));
                        }
                    }
                }
                kept.len() as u32
            }
            _ => {
                next.stats.parts += 1;
                // Only the last part is ever built again: the one before lets its
                // compiler go (for every generation sharing it), so one is kept.
                if let Some(prev) = next.parts.last_mut() {
                    if let Ok(mut c) = prev.compiler.lock() {
                        c.take();
                    }
                    next.stats.part_compiler_bytes -= prev.compiler_bytes;
                    prev.compiler_bytes = 0;
                }
                0
            }
        };
        next.parts.push(built);
        at.extend((0..added as u32).map(|i| (part, first_new + i)));
        next.programs = Arc::new(at);
        if !layer.ids.is_empty() {
            next.stats.lists += layer.ids.len();
            next.stats.list_bytes += layer.bytes();
            next.lists.push(Arc::new(layer));
        }
        next.stats.tree_bytes += bytes;
        next.stats.part_program_bytes += program_bytes;
        next.stats.part_compiler_bytes += compiler_bytes;
        next.stats.programs = total;
        next.stats.stage_bytes = next.stage_bytes();
        if next.stats.stage_bytes + next.stats.tree_bytes > cfg.memory_budget {
            return Err(ProgramChangeRefused::Build(BuildError::OverBudget {
                budget: cfg.memory_budget,
                program: self.programs.len() as u32,
                family: Family::V4,
                what: "identity stage",
            }));
        }
        Ok((next, dropped))
    }

    /// The identity-space form of a list the build or an earlier change resolved.
    /// By its allocation first (in every layer), then by content, the latest layer
    /// that has it deciding: a layer that forgets a list
    /// ([`IdentityClassifier::forgetting_lists`]) hides the earlier layers' form of
    /// it, and a later one may know it again, as a change resolved it.
    fn known(&self, v: &Nets) -> Option<&Nets> {
        self.lists
            .iter()
            .rev()
            .find_map(|l| l.by_alloc(v))
            .or_else(|| self.lists.iter().rev().find_map(|l| l.by_content(v)))
            .flatten()
    }

    /// The identities some live class has (tombstones and ghosts aside), sorted, as
    /// (IPv6, id): the identities an address can have. A known form is compared with
    /// a resolution by these.
    pub fn live_identities(&self) -> Vec<(bool, u32)> {
        let mut live: Vec<(bool, u32)> = self
            .cold
            .iter()
            .enumerate()
            .filter_map(|(c, cold)| {
                let six = match cold.prefix {
                    Some(p) => p.six,
                    None if c < 2 => c == 1,
                    None => return None,
                };
                Some((six, self.hot[c].identity))
            })
            .collect();
        live.sort_unstable();
        live.dedup();
        live
    }

    /// The identity-space forms of `lists`, each read as exactly its addresses in
    /// this generation: the identities of the classes inside the list's prefixes,
    /// and those of ghosts ([`IdentityClassifier::without_ghost_hosts`]) that no live
    /// class has, where the list names the ghost's prefix or one containing it.
    /// `None` when a prefix is no class and no ghost, or an identity lies only partly
    /// inside a list (some of its classes, or the "no prefix" addresses, outside it).
    fn resolve(&self, lists: &[Nets]) -> Option<Resolved> {
        if lists.is_empty() {
            return Some(Resolved::default());
        }
        // The lists naming each class, and each ghost, exactly.
        let mut naming: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut ghost_naming: HashMap<u32, Vec<u32>> = HashMap::new();
        for (li, l) in lists.iter().enumerate() {
            for q in l.iter() {
                let p = Pfx::of(q);
                // The longest class containing the prefix's first address, then up
                // to the prefix's own length.
                let mut c = self.class_index(&p);
                while let Some(x) = self.cold[c as usize].prefix
                    && x.len > p.len
                {
                    c = self.cold[c as usize].parent;
                }
                let v = if self.cold[c as usize].prefix == Some(p) {
                    naming.entry(c).or_default()
                } else {
                    ghost_naming.entry(*self.ghosts.get(&p)?).or_default()
                };
                if v.last() != Some(&(li as u32)) {
                    v.push(li as u32);
                }
            }
        }
        // Live classes per identity, and per list those inside it (a class is inside
        // when it or an ancestor is named).
        // Per family, by identity (dense: identities are numbered from 0 per family).
        let mut total: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let mut inside: Vec<HashMap<(bool, u32), u32>> = vec![HashMap::new(); lists.len()];
        let mut hit: Vec<u32> = Vec::new();
        // Which classes `naming` has, so that the walk up from each class hashes only
        // at those.
        let mut named = vec![false; self.hot.len()];
        for &c in naming.keys() {
            named[c as usize] = true;
        }
        // The lists naming class `c` or an ancestor, into `hit` (sorted, distinct).
        let lists_over = |c: u32, hit: &mut Vec<u32>| {
            let mut at = c;
            loop {
                if named[at as usize]
                    && let Some(ls) = naming.get(&at)
                {
                    hit.extend(ls);
                }
                let up = self.cold[at as usize].parent;
                if up == at {
                    break;
                }
                at = up;
            }
            hit.sort_unstable();
            hit.dedup();
        };
        for (c, cold) in self.cold.iter().enumerate() {
            let six = match cold.prefix {
                Some(p) => p.six,
                None if c < 2 => c == 1,
                // A tombstone: no address reaches it.
                None => continue,
            };
            let key = (six, self.hot[c].identity);
            let t = &mut total[usize::from(six)];
            if t.len() <= key.1 as usize {
                t.resize(key.1 as usize + 1, 0);
            }
            t[key.1 as usize] += 1;
            hit.clear();
            lists_over(c as u32, &mut hit);
            for &l in &hit {
                *inside[l as usize].entry(key).or_insert(0) += 1;
            }
        }
        let total_of = |(six, id): (bool, u32)| {
            total[usize::from(six)]
                .get(id as usize)
                .copied()
                .unwrap_or(0)
        };
        // Ghosts (a prefix bound again since is a live class, which decides): the
        // lists each is inside, named or through a containing prefix.
        let mut ghosts: Vec<(IpNet, (bool, u32), Vec<u32>)> = Vec::new();
        let mut rebound: Vec<IpNet> = Vec::new();
        for (p, &g) in self.ghosts.iter() {
            // Bound again since: a live class decides, and the ghost's identity is no
            // longer one a host there is read as (the caller drops it).
            if self.cold[self.class_index(p) as usize].prefix == Some(*p) {
                rebound.push(p.net());
                continue;
            }
            let mut h = ghost_naming.get(&g).cloned().unwrap_or_default();
            lists_over(self.cold[g as usize].parent, &mut h);
            ghosts.push((p.net(), (p.six, self.hot[g as usize].identity), h));
        }
        // An identity no live class has is in a list that one of its ghosts is in.
        let mut extra: Vec<Vec<(bool, u32)>> = vec![Vec::new(); lists.len()];
        for (_, key, h) in &ghosts {
            if total_of(*key) == 0 {
                for &l in h {
                    extra[l as usize].push(*key);
                }
            }
        }
        for e in &mut extra {
            e.sort_unstable();
            e.dedup();
        }
        // A ghost that a list holds otherwise than its identity.
        let mut out = Resolved {
            split: rebound,
            ..Resolved::default()
        };
        for (net, key, h) in &ghosts {
            let t = total_of(*key);
            let otherwise = (0..lists.len()).any(|l| {
                let holds = if t == 0 {
                    extra[l].binary_search(key).is_ok()
                } else {
                    inside[l].get(key) == Some(&t)
                };
                holds != h.binary_search(&(l as u32)).is_ok()
            });
            if otherwise {
                out.split.push(*net);
            }
            if t == 0 {
                out.pure.push((*net, *key));
            }
        }
        for (counts, extra) in inside.iter().zip(extra) {
            let mut members = extra;
            for (&key, &n) in counts {
                if total_of(key) != n {
                    return None;
                }
                members.push(key);
            }
            members.sort_unstable();
            out.forms.push(identity_prefixes(&self.blocks, &members));
        }
        Some(out)
    }

    /// The identity and binding of address `a`'s class.
    #[inline]
    fn class(&self, family: Family, a: u128) -> Hot {
        let none = Hot {
            identity: 0,
            binding: UNBOUND,
        };
        match family {
            // Always a value (the table covers 0.0.0.0/0).
            Family::V4 => self.front.lookup(a as u32).map_or(none, Hot::unpacked),
            Family::V6 => {
                let c = self.lpm.lookup_v6(a).unwrap_or(1);
                self.hot.get(c as usize).copied().unwrap_or(none)
            }
        }
    }

    fn class_index(&self, p: &Pfx) -> u32 {
        if p.six {
            self.lpm.lookup_v6(p.addr).unwrap_or(1)
        } else {
            self.lpm.lookup_v4(p.addr as u32).unwrap_or(0)
        }
    }

    /// The next generation with the host prefix `net` bound to `endpoint` (`ingress`
    /// and `egress` programs of this set) and classified as the bound host prefix
    /// `like` is: `net` joins every address list `like` is in, and nothing else
    /// changes. The trees are shared. Refused (a full build is needed) when `net` is
    /// not a host prefix, is already a class, lies inside a binding, or when the
    /// prefixes containing `net` and `like` give different identities (`net` would
    /// not be in the same lists as `like`).
    pub fn with_host(
        &self,
        net: IpNet,
        endpoint: EndpointId,
        ingress: Option<ProgramId>,
        egress: Option<ProgramId>,
        like: IpNet,
    ) -> Result<IdentityClassifier, HostChangeRefused> {
        let (p, parent) = self.host_slot(net, ingress, egress)?;
        let lp = Pfx::of(&like);
        let lc = self.class_index(&lp);
        let lcold = self.cold[lc as usize];
        if lcold.prefix != Some(lp)
            || lp.len != lp.width()
            || lp.six != p.six
            || self.hot[lc as usize].binding == UNBOUND
        {
            return Err(HostChangeRefused::BadExemplar(like));
        }
        if self.hot[lcold.parent as usize].identity != self.hot[parent as usize].identity {
            return Err(HostChangeRefused::NewIdentity(net));
        }
        let identity = self.hot[lc as usize].identity;
        self.bind_host(p, parent, identity, (endpoint, ingress, egress))
    }

    /// Where a new bound host class for `net` goes: its prefix and the class that
    /// holds its address now. Refused when `net` is not a host prefix, names a
    /// program this classifier lacks, is already a class or lies inside a binding.
    fn host_slot(
        &self,
        net: IpNet,
        ingress: Option<ProgramId>,
        egress: Option<ProgramId>,
    ) -> Result<(Pfx, u32), HostChangeRefused> {
        let p = Pfx::of(&net);
        if p.len != p.width() {
            return Err(HostChangeRefused::NotHost(net));
        }
        for q in [ingress, egress].into_iter().flatten() {
            if q.0 as usize >= self.programs.len() {
                return Err(HostChangeRefused::UnknownProgram(q.0));
            }
        }
        let parent = self.class_index(&p);
        if self.cold[parent as usize].prefix == Some(p) {
            return Err(HostChangeRefused::Known(net));
        }
        if let Some(b) = self.binding_prefix(parent) {
            return Err(HostChangeRefused::InsideBinding(net, b));
        }
        Ok((p, parent))
    }

    /// The next generation with a class for the host prefix `p` (inside class
    /// `parent`) of `identity`, bound as `binding` says.
    fn bind_host(
        &self,
        p: Pfx,
        parent: u32,
        identity: u32,
        binding: Binding,
    ) -> Result<IdentityClassifier, HostChangeRefused> {
        let class = u32::try_from(self.hot.len())
            .ok()
            .filter(|&c| c < 1 << 31)
            .ok_or(HostChangeRefused::TooMany)?;
        let next_binding = u32::try_from(self.bindings.len())
            .ok()
            .filter(|&b| b != UNBOUND)
            .ok_or(HostChangeRefused::TooMany)?;
        let hot = Hot {
            identity,
            binding: next_binding,
        };
        let mut next = self.clone();
        next.hot.push(hot);
        next.bindings.push(binding);
        next.cold.push(Cold {
            prefix: Some(p),
            parent,
        });
        next.lpm
            .set_host(p.six, p.addr, Some(class))
            .map_err(|_| HostChangeRefused::TooMany)?;
        if !p.six {
            let v = hot.packed().ok_or(HostChangeRefused::TooMany)?;
            next.front
                .set_host(p.addr as u32, Some(v))
                .map_err(|_| HostChangeRefused::TooMany)?;
        }
        next.stats.classes += 1;
        next.stats.stage_bytes = next.stage_bytes();
        Ok(next)
    }

    /// The next generation with the host prefix `net` bound to `endpoint` (`ingress`
    /// and `egress` programs of this classifier) and classified as the prefixes
    /// containing it classify it: `net` gets the identity an unbound address there
    /// has, so it is in exactly the address lists that contain it by prefix and in no
    /// other. For an endpoint no rule selects (no peer selector and no named port
    /// reads it), that is what a full build gives it. The trees are shared. Refused as
    /// [`IdentityClassifier::with_host`] is, but for the exemplar.
    pub fn with_unlisted_host(
        &self,
        net: IpNet,
        endpoint: EndpointId,
        ingress: Option<ProgramId>,
        egress: Option<ProgramId>,
    ) -> Result<IdentityClassifier, HostChangeRefused> {
        let (p, parent) = self.host_slot(net, ingress, egress)?;
        let identity = self.hot[parent as usize].identity;
        self.bind_host(p, parent, identity, (endpoint, ingress, egress))
    }

    /// The identity a bound host class has, as [`IdentityClassifier::with_host_identity`]
    /// takes it: kept, it lets a later generation of this build bind another host as
    /// this one is classified even when this one is gone (identity ids stay until the
    /// next build). `None` when `net` is not a bound host class of its own.
    pub fn host_identity(&self, net: IpNet) -> Option<HostIdentity> {
        let p = Pfx::of(&net);
        let c = self.class_index(&p) as usize;
        let cold = self.cold[c];
        if p.len != p.width() || cold.prefix != Some(p) || self.hot[c].binding == UNBOUND {
            return None;
        }
        Some(HostIdentity {
            six: p.six,
            identity: self.hot[c].identity,
            parent_identity: self.hot[cold.parent as usize].identity,
        })
    }

    /// The next generation with the host prefix `net` bound to `endpoint` and
    /// classified as the host `like` describes ([`IdentityClassifier::host_identity`]
    /// of this build, possibly of a host unbound since): `net` gets its identity, so
    /// it is in exactly the address lists that host was in. The trees are shared.
    /// Refused as [`IdentityClassifier::with_host`] is: `like` of the other family, or
    /// the prefixes containing `net` giving another identity than those that
    /// contained that host ([`HostChangeRefused::NewIdentity`]).
    ///
    /// The caller answers for `like` still describing the lists: true until a change
    /// resolves new lists ([`IdentityClassifier::with_programs`] with fresh ones),
    /// which counts only the identities of bound classes.
    pub fn with_host_identity(
        &self,
        net: IpNet,
        endpoint: EndpointId,
        ingress: Option<ProgramId>,
        egress: Option<ProgramId>,
        like: HostIdentity,
    ) -> Result<IdentityClassifier, HostChangeRefused> {
        let (p, parent) = self.host_slot(net, ingress, egress)?;
        if like.six != p.six {
            return Err(HostChangeRefused::NewIdentity(net));
        }
        if self.hot[parent as usize].identity != like.parent_identity {
            return Err(HostChangeRefused::NewIdentity(net));
        }
        self.bind_host(p, parent, like.identity, (endpoint, ingress, egress))
    }

    /// Whether [`IdentityClassifier::with_new_host_identity`] can split a new identity
    /// from the one `like` describes: it has free ids left (or is in no list).
    pub fn splits(&self, like: &HostIdentity) -> bool {
        like.identity == 0
            || self
                .blocks
                .of(like.six, like.identity)
                .is_some_and(|(next, end)| next < end)
    }

    /// The next generation with the host prefix `net` bound to `endpoint` and given an
    /// identity no class had, which every tree built so far reads as it reads
    /// *the template*: the host `like` describes ([`IdentityClassifier::host_identity`]
    /// of this build, possibly of a host unbound since, as
    /// [`IdentityClassifier::with_host_identity`] takes it), or else the prefixes
    /// containing `net`. The new identity is the next free id of the template
    /// identity's block ([`Blocks`]); for a template in no list (identity 0) an id
    /// above every id of this build and its changes, dead ones included. So `net` is
    /// in exactly the address lists this classifier knows that hold the template,
    /// under an identity of its own. The trees are shared. Refused as
    /// [`IdentityClassifier::with_unlisted_host`] is, as
    /// [`IdentityClassifier::with_host_identity`] is for `like` (of the other family,
    /// or the prefixes containing `net` of another identity than those that contained
    /// that host), and when the template's identity has no free id left
    /// ([`HostChangeRefused::NewIdentity`]: a build numbers the ids afresh).
    ///
    /// The caller answers for every program whose lists must tell `net` from the
    /// template (a peer selector picking one and not the other, a named port, a
    /// `notSelector`) being rebuilt ([`IdentityClassifier::with_programs`], those
    /// lists fresh) and rebound before the generation is published: until then `net`
    /// is read as the template is.
    pub fn with_new_host_identity(
        &self,
        net: IpNet,
        endpoint: EndpointId,
        ingress: Option<ProgramId>,
        egress: Option<ProgramId>,
        like: Option<HostIdentity>,
    ) -> Result<IdentityClassifier, HostChangeRefused> {
        let (p, parent) = self.host_slot(net, ingress, egress)?;
        let of_parent = self.hot[parent as usize].identity;
        let template = match like {
            Some(l) if l.six != p.six || l.parent_identity != of_parent => {
                return Err(HostChangeRefused::NewIdentity(net));
            }
            Some(l) => l.identity,
            None => of_parent,
        };
        let (identity, taken) = if template == 0 {
            // In no list. Tombstones keep their identity, so no id a known form may
            // hold is reused.
            let top = self
                .hot
                .iter()
                .map(|h| h.identity)
                .chain(self.blocks.end.iter().map(|e| e.saturating_sub(1)))
                .max()
                .unwrap_or(0);
            let id = top
                .checked_add(1)
                .filter(|&i| i < 1 << 31)
                .ok_or(HostChangeRefused::TooMany)?;
            (id, None)
        } else {
            match self.blocks.of(p.six, template) {
                Some((next, end)) if next < end => {
                    let mut taken = (*self.blocks.taken).clone();
                    taken.insert((p.six, template), next + 1);
                    (next, Some(taken))
                }
                _ => return Err(HostChangeRefused::NewIdentity(net)),
            }
        };
        let mut next = self.bind_host(p, parent, identity, (endpoint, ingress, egress))?;
        if let Some(t) = taken {
            next.blocks.taken = Arc::new(t);
            let split = (identity - template) as usize;
            next.stats.most_split = next.stats.most_split.max(split);
        }
        next.stats.identities += 1;
        Ok(next)
    }

    /// [`IdentityClassifier::without_host`] of several hosts, with one copy of the
    /// tables.
    pub fn without_hosts(&self, nets: &[IpNet]) -> Result<IdentityClassifier, HostChangeRefused> {
        let mut next = self.clone();
        for n in nets {
            next.unbind(*n)?;
        }
        Ok(next)
    }

    /// [`IdentityClassifier::without_hosts`], each prefix kept as a *ghost*: its
    /// class stays a tombstone that no address reaches, with its identity, and a
    /// fresh list may name the prefix ([`IdentityClassifier::resolve_fresh`]): the
    /// ghost's identity, when no live class has it, is in the list's form where the
    /// list names the prefix or one containing it; a ghost that a list reads
    /// otherwise than its identity's form there is reported
    /// ([`FreshLists::split_ghosts`]). For hosts lowered by the caller as if bound (a
    /// build's spare endpoints), so that lists lowered again the same way keep their
    /// identities.
    pub fn without_ghost_hosts(
        &self,
        nets: &[IpNet],
    ) -> Result<IdentityClassifier, HostChangeRefused> {
        let mut next = self.clone();
        let mut ghosts = (*self.ghosts).clone();
        for n in nets {
            let p = Pfx::of(n);
            let c = next.class_index(&p);
            next.unbind(*n)?;
            ghosts.insert(p, c);
        }
        next.ghosts = Arc::new(ghosts);
        Ok(next)
    }

    /// The next generation without the bound host prefix `net`: its address is
    /// classified as the prefixes containing it say (as if no list named it). The
    /// trees are shared. Refused when `net` is not a bound host class or lies inside
    /// another binding's prefix.
    pub fn without_host(&self, net: IpNet) -> Result<IdentityClassifier, HostChangeRefused> {
        let mut next = self.clone();
        next.unbind(net)?;
        Ok(next)
    }

    /// [`IdentityClassifier::without_host`] in place; on an error nothing is changed.
    fn unbind(&mut self, net: IpNet) -> Result<(), HostChangeRefused> {
        let p = Pfx::of(&net);
        if p.len != p.width() {
            return Err(HostChangeRefused::NotHost(net));
        }
        let c = self.class_index(&p);
        let cold = self.cold[c as usize];
        if cold.prefix != Some(p) || self.hot[c as usize].binding == UNBOUND {
            return Err(HostChangeRefused::NotBound(net));
        }
        if let Some(b) = self.binding_prefix(cold.parent) {
            return Err(HostChangeRefused::InsideBinding(net, b));
        }
        if !p.six {
            // The parent's value (the "no prefix" class's when no prefix contains it).
            let v = self.hot[cold.parent as usize].packed();
            self.front
                .set_host(p.addr as u32, Some(v.ok_or(HostChangeRefused::TooMany)?))
                .map_err(|_| HostChangeRefused::TooMany)?;
        }
        let parent = (cold.parent >= 2).then_some(cold.parent);
        self.lpm
            .set_host(p.six, p.addr, parent)
            .map_err(|_| HostChangeRefused::TooMany)?;
        // The class stays as a tombstone (nothing reaches it any more).
        self.hot.set(
            c as usize,
            Hot {
                binding: UNBOUND,
                ..self.hot[c as usize]
            },
        );
        if let Some(k) = self.cold.get_mut(c as usize) {
            k.prefix = None;
        }
        self.stats.classes -= 1;
        self.stats.stage_bytes = self.stage_bytes();
        Ok(())
    }

    /// The prefix of the binding that owns class `c`'s addresses, if any.
    fn binding_prefix(&self, c: u32) -> Option<IpNet> {
        if self.hot[c as usize].binding == UNBOUND {
            return None;
        }
        // The owner is the class itself or its nearest ancestor that is a binding.
        let mut at = c;
        loop {
            let up = self.cold[at as usize].parent;
            if up == at || self.hot[up as usize].binding != self.hot[c as usize].binding {
                return self.cold[at as usize].prefix.map(|p| p.net());
            }
            at = up;
        }
    }

    /// [`IdentityClassifier::classify_chunk`] when every program is in one part (the
    /// state after a build, and after host changes): all the chunk's LPM walks first
    /// (independent, so their loads overlap), then each binding's roots straight into
    /// the block's jobs, with no per-part job, location or result arrays.
    fn classify_chunk_one(&self, t: &Classifier, keys: &[FlowKey], out: &mut [FlowVerdicts]) {
        let n = keys.len().min(out.len()).min(BLOCK / 2);
        let (keys, out) = (&keys[..n], &mut out[..n]);
        let none = Hot {
            identity: 0,
            binding: UNBOUND,
        };
        let mut hot = [none; BLOCK];
        if keys.iter().all(|k| k.family == Family::V4) {
            // Both ends of every key through the IPv4 table at once (eight lanes a
            // gather where the kernel has them).
            let mut a = [0u32; BLOCK];
            for (a, k) in a.chunks_exact_mut(2).zip(keys) {
                a[0] = k.src as u32;
                a[1] = k.dst as u32;
            }
            let mut raw = [0u64; BLOCK];
            self.front.lookup_block(t.kernel, &a, &mut raw);
            for (h, &r) in hot.iter_mut().zip(&raw[..2 * n]) {
                if r & WideLpm::HIT != 0 {
                    *h = Hot::unpacked(r & !WideLpm::HIT);
                }
            }
        } else {
            for (h, k) in hot.chunks_exact_mut(2).zip(keys) {
                h[0] = self.class(k.family, k.src);
                h[1] = self.class(k.family, k.dst);
            }
        }
        let mut idk = [FlowKey {
            src: 0,
            dst: 0,
            sport: 0,
            dport: 0,
            proto: 0,
            family: Family::V4,
            ifindex: 0,
        }; BLOCK / 2];
        for ((d, h), k) in idk.iter_mut().zip(hot.chunks_exact(2)).zip(keys) {
            *d = FlowKey {
                src: h[0].identity.into(),
                dst: h[1].identity.into(),
                ..*k
            };
        }
        let mut jobs: [Option<(&super::Root, &FlowKey)>; BLOCK] = [None; BLOCK];
        let mut ep: [Option<EndpointId>; BLOCK] = [None; BLOCK];
        for (i, k) in idk[..n].iter().enumerate() {
            let f = family_index(k.family);
            for (j, ingress) in [(2 * i, false), (2 * i + 1, true)] {
                let Some(&(id, pi, pe)) = self.bindings.get(hot[j].binding as usize) else {
                    continue;
                };
                let Some(p) = (if ingress { pi } else { pe }) else {
                    continue;
                };
                // One part: every program is at its own index in it (a build numbers
                // them so, and only `with_programs` moves one, into a new part).
                let Some(root) = t.roots.get(p.0 as usize).and_then(|r| r.get(f)) else {
                    continue;
                };
                ep[j] = Some(id);
                jobs[j] = Some((root, k));
            }
        }
        let mut res = [SENTINEL; BLOCK];
        t.run_block(&jobs, &mut res);
        for (i, o) in out.iter_mut().enumerate() {
            *o = FlowVerdicts {
                egress: ep[2 * i].map(|id| (id, res[2 * i])),
                ingress: ep[2 * i + 1].map(|id| (id, res[2 * i + 1])),
            };
        }
    }

    /// Up to `BLOCK / 2` keys: each end's class, then each binding's program walked on
    /// the identity key, part by part.
    fn classify_chunk(&self, keys: &[FlowKey], out: &mut [FlowVerdicts]) {
        let n = keys.len().min(out.len()).min(BLOCK / 2);
        let mut idk = [FlowKey {
            src: 0,
            dst: 0,
            sport: 0,
            dport: 0,
            proto: 0,
            family: Family::V4,
            ifindex: 0,
        }; BLOCK / 2];
        let mut ep: [Option<EndpointId>; BLOCK] = [None; BLOCK];
        let mut at: [(u32, u32); BLOCK] = [(u32::MAX, 0); BLOCK];
        let mut sides = [(None, None); BLOCK / 2];
        for (i, k) in keys[..n].iter().enumerate() {
            let (s, d) = (self.class(k.family, k.src), self.class(k.family, k.dst));
            idk[i] = FlowKey {
                src: s.identity.into(),
                dst: d.identity.into(),
                ..*k
            };
            let egress = self
                .bindings
                .get(s.binding as usize)
                .and_then(|&(id, _, p)| Some((id, p?)));
            let ingress = self
                .bindings
                .get(d.binding as usize)
                .and_then(|&(id, p, _)| Some((id, p?)));
            sides[i] = (egress, ingress);
        }
        let mut used = 0u64; // parts with a job (a part beyond 63 shares bit 63)
        for (i, (egress, ingress)) in sides[..n].iter().enumerate() {
            for (j, side) in [(2 * i, egress), (2 * i + 1, ingress)] {
                let Some((id, p)) = side else { continue };
                let Some(&loc) = self.programs.get(p.0 as usize) else {
                    continue;
                };
                ep[j] = Some(*id);
                at[j] = loc;
                used |= 1 << loc.0.min(63);
            }
        }
        let mut res = [SENTINEL; BLOCK];
        for (pi, part) in self.parts.iter().enumerate() {
            if used & (1 << pi.min(63)) == 0 {
                continue;
            }
            let t = &*part.trees;
            let mut jobs: [Option<(&super::Root, &FlowKey)>; BLOCK] = [None; BLOCK];
            for (j, &(owner, local)) in at.iter().enumerate() {
                if owner as usize != pi {
                    continue;
                }
                let k = &idk[j / 2];
                jobs[j] = t
                    .roots
                    .get(local as usize)
                    .and_then(|r| r.get(family_index(k.family)))
                    .map(|r| (r, k));
                if jobs[j].is_none() {
                    ep[j] = None;
                }
            }
            let mut r = [SENTINEL; BLOCK];
            t.run_block(&jobs, &mut r);
            for (j, v) in r.iter().enumerate() {
                if jobs[j].is_some() {
                    res[j] = *v;
                    res[j].enforced.trace.0 += part.trace_base;
                    res[j].pending.trace.0 += part.trace_base;
                }
            }
        }
        for (i, o) in out[..n].iter_mut().enumerate() {
            *o = FlowVerdicts {
                egress: ep[2 * i].map(|id| (id, res[2 * i])),
                ingress: ep[2 * i + 1].map(|id| (id, res[2 * i + 1])),
            };
        }
    }
}

#[cfg(test)]
impl IdentityClassifier {
    /// [`Classify::classify`] always part by part (the general front end), for
    /// comparing the single-part one with it.
    fn classify_by_parts(&self, keys: &[FlowKey], out: &mut [FlowVerdicts]) {
        for (kc, oc) in keys.chunks(BLOCK / 2).zip(out.chunks_mut(BLOCK / 2)) {
            self.classify_chunk(kc, oc);
        }
    }
}

impl Classify for IdentityClassifier {
    fn classify(&self, keys: &[FlowKey], out: &mut [FlowVerdicts]) {
        // One part (its trace ids start at 0, and every program is in it): the
        // single-part front end; otherwise part by part.
        if let [only] = self.parts.as_slice()
            && only.trace_base == 0
        {
            let t = &*only.trees;
            for (kc, oc) in keys.chunks(BLOCK / 2).zip(out.chunks_mut(BLOCK / 2)) {
                self.classify_chunk_one(t, kc, oc);
            }
            return;
        }
        for (kc, oc) in keys.chunks(BLOCK / 2).zip(out.chunks_mut(BLOCK / 2)) {
            self.classify_chunk(kc, oc);
        }
    }

    fn trace(&self, id: TraceId) -> &[Hit] {
        // The part whose trace ids begin at or before `id`: the last such one.
        let Some(p) = self.parts.iter().rev().find(|p| p.trace_base <= id.0) else {
            return &[];
        };
        p.trees.trace(TraceId(id.0 - p.trace_base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::LinearClassifier;
    use crate::program::EndpointBinding;

    /// Host `n` bound to endpoint `e`, program 0 both ways.
    fn bind(n: &str, e: u32) -> EndpointBinding {
        EndpointBinding {
            net: n.parse().unwrap(),
            endpoint: EndpointId(e),
            ingress: Some(ProgramId(0)),
            egress: Some(ProgramId(0)),
        }
    }

    #[test]
    fn cover_is_minimal_and_exact() {
        let mut out = Vec::new();
        cover(false, 0, 0, &mut out);
        assert_eq!(out, vec!["0.0.0.0/32".parse::<IpNet>().unwrap()]);
        out.clear();
        cover(false, 1, 6, &mut out);
        let want: Vec<IpNet> = ["0.0.0.1/32", "0.0.0.2/31", "0.0.0.4/31", "0.0.0.6/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(out, want);
        out.clear();
        cover(false, 0, u32::MAX, &mut out);
        assert_eq!(out, vec!["0.0.0.0/0".parse::<IpNet>().unwrap()]);
        out.clear();
        cover(true, 4, 4, &mut out);
        assert_eq!(out, vec!["::4/128".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn host_changes_are_refused_where_the_identity_would_differ() {
        use crate::fixtures::{net, policy, program, rule, tier};
        use crate::program::Action;
        let pods = vec![net("10.0.0.1/32"), net("10.0.0.2/32")];
        let m = Match {
            src_nets: Some(pods.clone().into()),
            ..Match::default()
        };
        let cidr = Match {
            src_nets: Some(vec![net("10.1.0.0/16")].into()),
            ..Match::default()
        };
        let p = program(
            vec![tier(
                0,
                crate::program::TierDefault::Deny,
                vec![policy(
                    0,
                    false,
                    vec![rule(0, Action::Allow, m), rule(1, Action::Deny, cidr)],
                )],
            )],
            vec![],
        );
        let set = PolicySet {
            programs: vec![p],
            endpoints: vec![bind("10.0.0.1/32", 0), bind("10.0.0.2/32", 1)],
        };
        let c = IdentityClassifier::build(&set, &BuildConfig::default()).unwrap();
        let like = net("10.0.0.1/32");
        let e = EndpointId(2);
        let pr = Some(ProgramId(0));
        // Inside 10.1/16: the rule CIDR makes it another identity.
        assert_eq!(
            c.with_host(net("10.1.0.9/32"), e, pr, pr, like)
                .unwrap_err(),
            HostChangeRefused::NewIdentity(net("10.1.0.9/32"))
        );
        assert_eq!(
            c.with_host(net("10.0.0.2/32"), e, pr, pr, like)
                .unwrap_err(),
            HostChangeRefused::Known(net("10.0.0.2/32"))
        );
        assert_eq!(
            c.with_host(net("10.0.0.0/24"), e, pr, pr, like)
                .unwrap_err(),
            HostChangeRefused::NotHost(net("10.0.0.0/24"))
        );
        assert_eq!(
            c.with_host(net("10.0.0.3/32"), e, pr, Some(ProgramId(5)), like)
                .unwrap_err(),
            HostChangeRefused::UnknownProgram(5)
        );
        assert_eq!(
            c.without_host(net("10.0.0.3/32")).unwrap_err(),
            HostChangeRefused::NotBound(net("10.0.0.3/32"))
        );
        // Accepted: the new pod joins 10.0.0.1's lists; equal to a fresh build with it.
        let next = c.with_host(net("10.0.0.3/32"), e, pr, pr, like).unwrap();
        let mut set2 = set.clone();
        if let Some(v) = &mut set2.programs[0].tiers[0].policies[0].rules[0]
            .matches
            .src_nets
        {
            *v = v.iter().copied().chain([net("10.0.0.3/32")]).collect();
        }
        set2.endpoints.push(bind("10.0.0.3/32", 2));
        let lin = LinearClassifier::new(set2).unwrap();
        let keys: Vec<FlowKey> = ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.1.0.9"]
            .iter()
            .flat_map(|s| {
                ["10.0.0.2", "10.0.0.3"]
                    .iter()
                    .map(move |d| crate::fixtures::tcp(s, d, 80))
            })
            .collect();
        assert_same(&next, &lin, &keys);
        // And back.
        let back = next.without_host(net("10.0.0.3/32")).unwrap();
        assert_same(&back, &LinearClassifier::new(set).unwrap(), &keys);
    }

    /// A host's identity, kept while the host is unbound, binds another host as that
    /// one was classified: in the lists it was in, equal to the linear reference with
    /// the new host in those lists; refused for the other family and where the
    /// prefixes containing the new host give another identity (a rule CIDR).
    #[test]
    fn a_kept_host_identity_binds_a_later_host() {
        use crate::fixtures::{net, policy, program, rule, tcp, tier};
        use crate::program::Action;
        let listed = |v: &[&str]| -> Nets { v.iter().map(|a| net(a)).collect::<Vec<_>>().into() };
        let p = |pods: Nets| {
            program(
                vec![tier(
                    0,
                    crate::program::TierDefault::Deny,
                    vec![policy(
                        0,
                        false,
                        vec![
                            rule(
                                0,
                                Action::Allow,
                                Match {
                                    src_nets: Some(pods),
                                    ..Match::default()
                                },
                            ),
                            rule(
                                1,
                                Action::Allow,
                                Match {
                                    src_nets: Some(listed(&["10.1.0.0/16"])),
                                    ..Match::default()
                                },
                            ),
                        ],
                    )],
                )],
                vec![],
            )
        };
        // 240.0.0.1 stands in for a host that is unbound after the build.
        let set = PolicySet {
            programs: vec![p(listed(&["10.0.0.1/32", "240.0.0.1/32"]))],
            endpoints: vec![
                bind("10.0.0.1/32", 0),
                bind("10.0.0.2/32", 1),
                bind("240.0.0.1/32", 2),
            ],
        };
        let cfg = BuildConfig::default();
        let built = IdentityClassifier::build(&set, &cfg).unwrap();
        let like = built.host_identity(net("240.0.0.1/32")).unwrap();
        assert_eq!(built.host_identity(net("10.0.0.9/32")), None);
        let c = built.without_hosts(&[net("240.0.0.1/32")]).unwrap();
        assert_eq!(c.host_identity(net("240.0.0.1/32")), None);
        let pr = Some(ProgramId(0));
        assert_eq!(
            c.with_host_identity(net("fd00::1/128"), EndpointId(3), pr, pr, like)
                .unwrap_err(),
            HostChangeRefused::NewIdentity(net("fd00::1/128"))
        );
        assert_eq!(
            c.with_host_identity(net("10.1.0.9/32"), EndpointId(3), pr, pr, like)
                .unwrap_err(),
            HostChangeRefused::NewIdentity(net("10.1.0.9/32"))
        );
        let next = c
            .with_host_identity(net("10.0.0.3/32"), EndpointId(3), pr, pr, like)
            .unwrap();
        let want = PolicySet {
            programs: vec![p(listed(&["10.0.0.1/32", "10.0.0.3/32"]))],
            endpoints: vec![
                bind("10.0.0.1/32", 0),
                bind("10.0.0.2/32", 1),
                bind("10.0.0.3/32", 3),
            ],
        };
        let addrs = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "240.0.0.1", "10.1.0.9"];
        let keys: Vec<FlowKey> = addrs
            .iter()
            .flat_map(|s| addrs.iter().map(move |d| tcp(s, d, 80)))
            .collect();
        assert_same(&next, &LinearClassifier::new(want).unwrap(), &keys);
    }

    /// A host bound with the identity of its prefix's class is in exactly the lists
    /// that contain it by prefix: inside the rule CIDR it is denied as the CIDR's
    /// other addresses are, outside every list it matches nothing; each equals the
    /// linear reference with the host bound and no list changed. Refused as
    /// `with_host` is for known, non-host and inside-binding prefixes.
    #[test]
    fn unlisted_hosts_take_their_prefix_class_identity() {
        use crate::fixtures::{net, policy, program, rule, tier};
        use crate::program::Action;
        let m = Match {
            src_nets: Some(vec![net("10.0.0.1/32"), net("10.0.0.2/32")].into()),
            ..Match::default()
        };
        let cidr = Match {
            src_nets: Some(vec![net("10.1.0.0/16")].into()),
            ..Match::default()
        };
        let p = program(
            vec![tier(
                0,
                crate::program::TierDefault::Deny,
                vec![policy(
                    0,
                    false,
                    vec![rule(0, Action::Allow, m), rule(1, Action::Deny, cidr)],
                )],
            )],
            vec![],
        );
        let open = program(vec![], vec![]);
        let bind = |n: &str, e: u32, p: u32| EndpointBinding {
            net: net(n),
            endpoint: EndpointId(e),
            ingress: Some(ProgramId(p)),
            egress: Some(ProgramId(p)),
        };
        let set = PolicySet {
            programs: vec![p, open],
            endpoints: vec![
                bind("10.0.0.1/32", 0, 0),
                bind("10.0.0.2/32", 1, 0),
                bind("10.2.0.0/24", 2, 1),
            ],
        };
        let c = IdentityClassifier::build(&set, &BuildConfig::default()).unwrap();
        let pr = Some(ProgramId(0));
        assert_eq!(
            c.with_unlisted_host(net("10.0.0.2/32"), EndpointId(3), pr, pr)
                .unwrap_err(),
            HostChangeRefused::Known(net("10.0.0.2/32"))
        );
        assert_eq!(
            c.with_unlisted_host(net("10.0.0.0/24"), EndpointId(3), pr, pr)
                .unwrap_err(),
            HostChangeRefused::NotHost(net("10.0.0.0/24"))
        );
        assert_eq!(
            c.with_unlisted_host(net("10.2.0.7/32"), EndpointId(3), pr, pr)
                .unwrap_err(),
            HostChangeRefused::InsideBinding(net("10.2.0.7/32"), net("10.2.0.0/24"))
        );
        let next = c
            .with_unlisted_host(net("10.1.0.9/32"), EndpointId(3), pr, pr)
            .unwrap()
            .with_unlisted_host(net("10.0.0.3/32"), EndpointId(4), pr, pr)
            .unwrap();
        let mut set2 = set.clone();
        set2.endpoints.push(bind("10.1.0.9/32", 3, 0));
        set2.endpoints.push(bind("10.0.0.3/32", 4, 0));
        let lin = LinearClassifier::new(set2).unwrap();
        let addrs = ["10.0.0.1", "10.0.0.3", "10.1.0.9", "10.1.0.10", "10.3.0.1"];
        let keys: Vec<FlowKey> = addrs
            .iter()
            .flat_map(|s| addrs.iter().map(move |d| crate::fixtures::tcp(s, d, 80)))
            .collect();
        assert_same(&next, &lin, &keys);
    }

    /// Inside a prefix a list names, a new identity takes the next free id of the
    /// prefix identity's block, so the trees read it as the prefix: `BLOCK_IDS - 1`
    /// times (counted in `most_split`), then refused (a build numbers the ids
    /// afresh); outside every prefix there is no limit. The hosts are read as the
    /// linear reference reads them.
    #[test]
    fn new_identities_inside_a_prefix_take_free_ids_of_its_block() {
        use crate::fixtures::{net, policy, program, rule, tcp, tier};
        use crate::program::{Action, TierDefault};
        let m = |l: &str| Match {
            src_nets: Some(vec![net(l)].into()),
            ..Match::default()
        };
        let p = program(
            vec![tier(
                0,
                TierDefault::Pass,
                vec![policy(
                    0,
                    false,
                    vec![
                        rule(0, Action::Allow, m("10.0.0.1/32")),
                        rule(1, Action::Deny, m("10.1.0.0/16")),
                    ],
                )],
            )],
            vec![],
        );
        let mut set = PolicySet {
            programs: vec![p],
            endpoints: vec![bind("10.0.0.1/32", 0)],
        };
        let mut c = IdentityClassifier::build(&set, &BuildConfig::default()).unwrap();
        let prefix = c.class(Family::V4, 0x0a01_0000).identity;
        let mut ids = vec![prefix, c.class(Family::V4, 0x0a00_0001).identity];
        for i in 1..=BLOCK_IDS {
            let host = net(&format!("10.1.{}.{}/32", i / 256, i % 256));
            let r = c.with_new_host_identity(host, EndpointId(i), Some(ProgramId(0)), None, None);
            if i == BLOCK_IDS {
                assert_eq!(r.unwrap_err(), HostChangeRefused::NewIdentity(host));
                break;
            }
            c = r.unwrap();
            let id = c.host_identity(host).unwrap().identity;
            assert_eq!(id, prefix + i, "the block's next free id");
            assert_eq!(c.stats().most_split, i as usize);
            ids.push(id);
            set.endpoints.push(EndpointBinding {
                egress: None,
                ..bind(&format!("10.1.{}.{}/32", i / 256, i % 256), i)
            });
        }
        for i in 0..40 {
            let host = net(&format!("10.3.0.{i}/32"));
            c = c
                .with_new_host_identity(host, EndpointId(100 + i), None, Some(ProgramId(0)), None)
                .unwrap();
            ids.push(c.host_identity(host).unwrap().identity);
            set.endpoints.push(EndpointBinding {
                ingress: None,
                ..bind(&format!("10.3.0.{i}/32"), 100 + i)
            });
        }
        let distinct: std::collections::HashSet<u32> = ids.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            ids.len(),
            "every new host an identity of its own"
        );
        let addrs = [
            "10.0.0.1",
            "10.1.0.1",
            "10.1.0.15",
            "10.1.0.16",
            "10.3.0.7",
            "10.4.0.1",
        ];
        let keys: Vec<FlowKey> = addrs
            .iter()
            .flat_map(|s| addrs.iter().map(move |d| tcp(s, d, 80)))
            .collect();
        assert_same(&c, &LinearClassifier::new(set).unwrap(), &keys);
    }

    /// A fresh list is resolved to the identities inside it: accepted when it holds
    /// whole identities (also a host added since the build, like a listed one),
    /// refused when it splits one, including a known list whose addresses a host
    /// change has since extended.
    #[test]
    fn fresh_lists_take_whole_identities_or_are_refused() {
        use crate::fixtures::{net, policy, program, rule, tcp, tier};
        use crate::program::{Action, TierDefault};
        let pods = vec![net("10.0.0.1/32"), net("10.0.0.2/32"), net("10.0.0.3/32")];
        let web = vec![net("10.0.0.1/32"), net("10.0.0.2/32")];
        let allow_from = |id: u32, l: Vec<IpNet>| {
            program(
                vec![tier(
                    0,
                    TierDefault::Deny,
                    vec![policy(
                        id,
                        false,
                        vec![rule(
                            0,
                            Action::Allow,
                            Match {
                                src_nets: Some(l.into()),
                                ..Match::default()
                            },
                        )],
                    )],
                )],
                vec![],
            )
        };
        let bind = |n: &str, e: u32, p: u32| EndpointBinding {
            net: net(n),
            endpoint: EndpointId(e),
            ingress: Some(ProgramId(p)),
            egress: Some(ProgramId(p)),
        };
        let mut set = PolicySet {
            programs: vec![allow_from(0, web.clone()), allow_from(1, pods.clone())],
            endpoints: vec![
                bind("10.0.0.1/32", 0, 0),
                bind("10.0.0.2/32", 1, 0),
                bind("10.0.0.3/32", 2, 1),
            ],
        };
        let cfg = BuildConfig::default();
        let c = IdentityClassifier::build(&set, &cfg).unwrap();
        // 10.0.0.4 joins 10.0.0.1's identity (in both lists).
        let c = c
            .with_host(
                net("10.0.0.4/32"),
                EndpointId(3),
                Some(ProgramId(0)),
                Some(ProgramId(0)),
                net("10.0.0.1/32"),
            )
            .unwrap();
        set.programs[0].tiers[0].policies[0].rules[0]
            .matches
            .src_nets =
            Some(vec![net("10.0.0.1/32"), net("10.0.0.2/32"), net("10.0.0.4/32")].into());
        set.programs[1].tiers[0].policies[0].rules[0]
            .matches
            .src_nets = Some(
            vec![
                net("10.0.0.1/32"),
                net("10.0.0.2/32"),
                net("10.0.0.3/32"),
                net("10.0.0.4/32"),
            ]
            .into(),
        );
        set.endpoints.push(bind("10.0.0.4/32", 3, 0));
        let keys: Vec<FlowKey> = (1..=5)
            .flat_map(|s| {
                (1..=4).map(move |d| tcp(&format!("10.0.0.{s}"), &format!("10.0.0.{d}"), 80))
            })
            .collect();
        let rebind = [(net("10.0.0.3/32"), Some(ProgramId(2)), Some(ProgramId(2)))];
        // The web pods as the store now has them: a new list, whole identities.
        let now = vec![net("10.0.0.4/32"), net("10.0.0.2/32"), net("10.0.0.1/32")];
        let next = c
            .with_programs(
                vec![allow_from(2, now.clone())],
                &[now.clone().into()],
                &rebind,
                &cfg,
            )
            .unwrap();
        let mut want = set.clone();
        want.programs.push(allow_from(2, now.clone()));
        want.endpoints[2].ingress = Some(ProgramId(2));
        want.endpoints[2].egress = Some(ProgramId(2));
        assert_same(&next, &LinearClassifier::new(want).unwrap(), &keys);
        assert_eq!(next.stats().lists, c.stats().lists + 1);
        // Known to the next generation: named again, it is not resolved again.
        next.with_programs(vec![allow_from(3, now.clone())], &[], &[], &cfg)
            .unwrap();
        // 10.0.0.1 without 10.0.0.4 splits their identity.
        let split = vec![net("10.0.0.1/32")];
        assert!(matches!(
            c.with_programs(
                vec![allow_from(2, split.clone())],
                &[split.clone().into()],
                &rebind,
                &cfg
            ),
            Err(ProgramChangeRefused::NewList)
        ));
        // The build's web list, named as exactly its addresses, leaves 10.0.0.4 out:
        // the known form (which has it) no longer describes it.
        assert!(matches!(
            c.with_programs(
                vec![allow_from(2, web.clone())],
                &[web.clone().into()],
                &rebind,
                &cfg
            ),
            Err(ProgramChangeRefused::NewList)
        ));
        // ... and unnamed as fresh, it is the known list (10.0.0.4 in).
        assert!(
            c.with_programs(vec![allow_from(2, web.clone())], &[], &rebind, &cfg)
                .is_ok()
        );
        // A prefix that is no class, and one containing the "no prefix" addresses.
        let cidr = vec![net("10.0.0.0/24")];
        assert!(matches!(
            c.with_programs(
                vec![allow_from(2, cidr.clone())],
                &[cidr.clone().into()],
                &rebind,
                &cfg
            ),
            Err(ProgramChangeRefused::NewList)
        ));
    }

    /// A program whose one tier allows what comes from `l` (policy `id`) and denies
    /// the rest.
    fn allow_from_nets(id: u32, l: Nets) -> Program {
        use crate::fixtures::{policy, program, rule, tier};
        use crate::program::{Action, TierDefault};
        let m = Match {
            src_nets: Some(l),
            ..Match::default()
        };
        let rules = vec![rule(0, Action::Allow, m)];
        let tiers = vec![tier(0, TierDefault::Deny, vec![policy(id, false, rules)])];
        program(tiers, vec![])
    }

    /// Host `n` bound as endpoint `e` to program `p`, ingress and egress.
    fn bound_both_ways(n: &str, e: u32, p: u32) -> EndpointBinding {
        EndpointBinding {
            net: crate::fixtures::net(n),
            endpoint: EndpointId(e),
            ingress: Some(ProgramId(p)),
            egress: Some(ProgramId(p)),
        }
    }

    /// Ghosts: a host unbound as a ghost is no class, but a fresh list may name it.
    /// Its identity, when no live class has it, is in the form of a list that names
    /// it (and a host later given that identity is read as the ghost was); a ghost
    /// whose identity a live class shares, named otherwise than that class, is
    /// reported split. Unbound as a plain host, the same list is refused.
    #[test]
    fn ghost_hosts_resolve_by_their_identity() {
        use crate::fixtures::{net, tcp};
        let allow_from =
            |id: u32, l: &[&str]| allow_from_nets(id, l.iter().map(|n| net(n)).collect());
        let bind = bound_both_ways;
        let (a, b, g) = ("10.0.0.1/32", "10.0.0.2/32", "10.0.0.9/32");
        let cfg = BuildConfig::default();
        // The ghost's identity only it has: A and B share one, G is in one more list.
        let set = PolicySet {
            programs: vec![allow_from(0, &[a, g, b]), allow_from(1, &[g])],
            endpoints: vec![bind(a, 0, 0), bind(b, 1, 0), bind(g, 2, 1)],
        };
        let c = IdentityClassifier::build(&set, &cfg).unwrap();
        let like = c.host_identity(net(g));
        let plain = c.without_hosts(&[net(g)]).unwrap();
        let c = c.without_ghost_hosts(&[net(g)]).unwrap();
        let abg: Nets = [a, b, g].iter().map(|n| net(n)).collect();
        assert!(matches!(
            plain.resolve_fresh(std::slice::from_ref(&abg)),
            Err(ProgramChangeRefused::NewList)
        ));
        let f = c.resolve_fresh(std::slice::from_ref(&abg)).unwrap();
        assert!(f.split_ghosts().is_empty());
        let rebind = [(net(a), Some(ProgramId(2)), Some(ProgramId(2)))];
        let (next, _) = c
            .with_fresh_programs(vec![allow_from(2, &[a, b, g])], f, &rebind, None, &cfg)
            .unwrap();
        // A host given the ghost's identity is read as the ghost: in the fresh list
        // and in the build's; the ghost's own address is in no list (no class).
        let p = "10.0.0.7/32";
        let next = next
            .with_host_identity(
                net(p),
                EndpointId(3),
                Some(ProgramId(0)),
                Some(ProgramId(0)),
                like.unwrap(),
            )
            .unwrap();
        let want = PolicySet {
            programs: vec![
                allow_from(0, &[a, b, p]),
                allow_from(1, &[p]),
                allow_from(2, &[a, b, p]),
            ],
            endpoints: vec![bind(a, 0, 2), bind(b, 1, 0), bind(p, 3, 0)],
        };
        let keys: Vec<FlowKey> = [1, 2, 7, 9]
            .iter()
            .flat_map(|s| {
                [1, 2, 7].map(move |d| tcp(&format!("10.0.0.{s}"), &format!("10.0.0.{d}"), 80))
            })
            .collect();
        assert_same(&next, &LinearClassifier::new(want).unwrap(), &keys);
        // The ghost's identity shared with B: naming B and not the ghost splits it.
        let set = PolicySet {
            programs: vec![allow_from(0, &[a, g, b]), allow_from(1, &[g, b])],
            endpoints: vec![bind(a, 0, 0), bind(b, 1, 1), bind(g, 2, 1)],
        };
        let c = IdentityClassifier::build(&set, &cfg)
            .unwrap()
            .without_ghost_hosts(&[net(g)])
            .unwrap();
        let only_b: Nets = vec![net(b)].into();
        let f = c.resolve_fresh(std::slice::from_ref(&only_b)).unwrap();
        assert_eq!(f.split_ghosts(), &[net(g)]);
        let bg: Nets = vec![net(b), net(g)].into();
        let f = c.resolve_fresh(std::slice::from_ref(&bg)).unwrap();
        assert!(f.split_ghosts().is_empty());
        // A list containing the ghost by prefix holds its identity.
        let set = PolicySet {
            programs: vec![allow_from(0, &["10.0.0.0/24"]), allow_from(1, &[g])],
            endpoints: vec![bind(a, 0, 0), bind(g, 2, 1)],
        };
        let c = IdentityClassifier::build(&set, &cfg)
            .unwrap()
            .without_ghost_hosts(&[net(g)])
            .unwrap();
        let cidr: Nets = vec![net("10.0.0.0/24")].into();
        let f = c.resolve_fresh(std::slice::from_ref(&cidr)).unwrap();
        assert!(f.split_ghosts().is_empty());
        // Resolved by one generation, refused by the next (a host unbound between).
        let unbound = c.without_host(net(a)).unwrap();
        assert!(matches!(
            unbound.with_fresh_programs(vec![allow_from(3, &["10.0.0.0/24"])], f, &[], None, &cfg),
            Err(ProgramChangeRefused::NewList)
        ));
        // A host bound at the ghost's address again: the ghost is reported split.
        let again = c
            .with_host(
                net(g),
                EndpointId(9),
                Some(ProgramId(0)),
                Some(ProgramId(0)),
                net(a),
            )
            .unwrap();
        let f = again.resolve_fresh(std::slice::from_ref(&cidr)).unwrap();
        assert_eq!(f.split_ghosts(), &[net(g)]);
    }

    /// A known list whose form a split made stale (the kept trees read a host split
    /// from a listed one as that one, so the known form holds the new identity): named
    /// fresh, as exactly its addresses, it is refused as stale; forgotten, it is
    /// unknown unless fresh, and fresh it resolves to its addresses now, while the
    /// kept programs still read the split host as its template. The next generation
    /// knows it in that form.
    #[test]
    fn a_forgotten_stale_list_takes_the_form_of_its_addresses() {
        use crate::fixtures::{net, tcp};
        let (allow_from, bind) = (allow_from_nets, bound_both_ways);
        let a = vec![net("10.0.0.1/32")];
        let mut set = PolicySet {
            programs: vec![
                allow_from(0, a.clone().into()),
                allow_from(1, vec![net("10.0.0.1/32"), net("10.0.0.2/32")].into()),
            ],
            endpoints: vec![bind("10.0.0.1/32", 0, 0), bind("10.0.0.2/32", 1, 1)],
        };
        let cfg = BuildConfig::default();
        let c = IdentityClassifier::build(&set, &cfg).unwrap();
        let like = c.host_identity(net("10.0.0.1/32"));
        let c = c
            .with_new_host_identity(
                net("10.0.0.9/32"),
                EndpointId(2),
                Some(ProgramId(1)),
                Some(ProgramId(1)),
                like,
            )
            .unwrap();
        // Every tree reads 10.0.0.9 as 10.0.0.1.
        for (p, l) in [
            (0, vec!["10.0.0.1/32", "10.0.0.9/32"]),
            (1, vec!["10.0.0.1/32", "10.0.0.2/32", "10.0.0.9/32"]),
        ] {
            set.programs[p] =
                allow_from(p as u32, l.into_iter().map(net).collect::<Vec<_>>().into());
        }
        set.endpoints.push(bind("10.0.0.9/32", 2, 1));
        let keys: Vec<FlowKey> = [1, 2, 3, 9]
            .iter()
            .flat_map(|s| {
                [1, 2, 9].map(move |d| tcp(&format!("10.0.0.{s}"), &format!("10.0.0.{d}"), 80))
            })
            .collect();
        assert_same(&c, &LinearClassifier::new(set.clone()).unwrap(), &keys);
        let fresh: Nets = a.clone().into();
        let rebind = [(net("10.0.0.2/32"), Some(ProgramId(2)), Some(ProgramId(2)))];
        // The program names the fresh list's own allocation.
        let add = || vec![allow_from(2, fresh.clone())];
        match c.with_programs(add(), std::slice::from_ref(&fresh), &rebind, &cfg) {
            Err(ProgramChangeRefused::StaleLists(v)) => assert_eq!(v, [0]),
            other => panic!("not refused as stale: {:?}", other.map(|c| *c.stats())),
        }
        let forgot = c.forgetting_lists(std::slice::from_ref(&fresh));
        assert!(matches!(
            forgot.with_programs(add(), &[], &rebind, &cfg),
            Err(ProgramChangeRefused::NewList)
        ));
        // Forgotten by content too: another allocation of the same addresses.
        let copy: Nets = a.clone().into();
        assert!(matches!(
            forgot.with_programs(vec![allow_from(2, copy.clone())], &[], &rebind, &cfg),
            Err(ProgramChangeRefused::NewList)
        ));
        let next = forgot
            .with_programs(add(), std::slice::from_ref(&copy), &rebind, &cfg)
            .unwrap();
        let mut want = set.clone();
        want.programs.push(allow_from(2, fresh.clone()));
        want.endpoints[1] = bind("10.0.0.2/32", 1, 2);
        assert_same(&next, &LinearClassifier::new(want.clone()).unwrap(), &keys);
        // Known to the next generation in the fresh form, by content.
        let rebind = [(net("10.0.0.1/32"), Some(ProgramId(3)), Some(ProgramId(3)))];
        let next = next
            .with_programs(vec![allow_from(3, a.clone().into())], &[], &rebind, &cfg)
            .unwrap();
        want.programs.push(allow_from(3, a.clone().into()));
        want.endpoints[0] = bind("10.0.0.1/32", 0, 3);
        assert_same(&next, &LinearClassifier::new(want).unwrap(), &keys);
    }

    use super::super::tests::{arb_host, arb_picks, arb_program, distinct_bindings, packets};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Lists named as exactly their addresses after host changes (bound hosts
        /// added like others and removed): a program naming them, added with
        /// [`IdentityClassifier::with_programs`], classifies as the linear reference
        /// over the set with those lists does, or is refused.
        #[test]
        fn fresh_lists_agree_with_linear(
            a in arb_program(),
            b in arb_program(),
            hosts in prop::collection::vec((arb_host(), 0u8..3, 0u8..3), 1..7),
            adds in prop::collection::vec((arb_host(), any::<prop::sample::Index>(), any::<bool>()), 0..4),
            rounds in prop::collection::vec((any::<u64>(), any::<u64>(), any::<prop::sample::Index>(), any::<bool>()), 1..4),
            picks in arb_picks(16),
        ) {
            use super::super::tests::{add_like, remove_host};
            let endpoints = distinct_bindings(hosts);
            let mut a = a;
            if let Some(r) = a.tiers.iter_mut().flat_map(|t| &mut t.policies).flat_map(|p| &mut p.rules).next() {
                r.matches.src_nets = Some(endpoints.iter().step_by(2).map(|e| e.net).collect());
            }
            let mut set = PolicySet { programs: vec![a.clone(), b.clone()], endpoints };
            let cfg = BuildConfig::default();
            let mut cl = IdentityClassifier::build(&set, &cfg)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (host, which, remove) in adds {
                if set.endpoints.is_empty() {
                    break;
                }
                let i = which.index(set.endpoints.len());
                if remove {
                    let gone = set.endpoints[i].net;
                    if let Ok(next) = cl.without_host(gone) {
                        remove_host(&mut set, gone);
                        cl = next;
                    }
                } else {
                    let like = set.endpoints[i].clone();
                    let binding = EndpointBinding { net: host, endpoint: EndpointId(100 + set.endpoints.len() as u32), ..like.clone() };
                    if let Ok(next) = cl.with_host(host, binding.endpoint, binding.ingress, binding.egress, like.net) {
                        add_like(&mut set, host, like.net, binding);
                        cl = next;
                    }
                }
            }
            let mut keys = packets(&a, &picks);
            keys.extend(packets(&b, &picks));
            for e in &set.endpoints {
                for o in &set.endpoints {
                    let (IpNet::V4(x), IpNet::V4(y)) = (e.net, o.net) else { continue };
                    keys.push(FlowKey { src: u32::from(x.addr()).into(), dst: u32::from(y.addr()).into(), sport: 1, dport: 80, proto: crate::program::proto::TCP, family: Family::V4, ifindex: 0 });
                }
            }
            for (src_mask, dst_mask, which, reverse) in rounds {
                if set.endpoints.is_empty() {
                    break;
                }
                let subset = |mask: u64| -> Vec<IpNet> {
                    let mut l: Vec<IpNet> = set.endpoints.iter().enumerate()
                        .filter(|(i, _)| mask >> (i % 64) & 1 == 1)
                        .map(|(_, e)| e.net)
                        .collect();
                    if reverse {
                        l.reverse();
                    }
                    l
                };
                let (src, dst) = (subset(src_mask), subset(dst_mask));
                // A program naming the fresh lists, then b's tiers (known lists: the
                // classifier reads them as the host changes since made them, so the
                // reference takes b's tiers as the set has them now).
                let tier = crate::fixtures::tier(9, crate::program::TierDefault::Pass, vec![
                    crate::fixtures::policy(90, false, vec![
                        crate::fixtures::rule(0, crate::program::Action::Allow, Match { src_nets: Some(src.clone().into()), ..Match::default() }),
                        crate::fixtures::rule(1, crate::program::Action::Deny, Match { dst_nets: Some(dst.clone().into()), not_src_nets: src.clone().into(), ..Match::default() }),
                    ]),
                ]);
                let mut f = b.clone();
                f.tiers.insert(0, tier.clone());
                let mut f_set = set.programs[1].clone();
                f_set.tiers.insert(0, tier);
                let id = ProgramId(set.programs.len() as u32);
                let i = which.index(set.endpoints.len());
                let net = set.endpoints[i].net;
                let fresh: [Nets; 2] = [src.clone().into(), dst.clone().into()];
                let rebind = [(net, Some(id), Some(id))];
                let mut next = cl.with_programs(vec![f.clone()], &fresh, &rebind, &cfg);
                // A stale fresh list is forgotten and the change tried again, when b
                // (named in the known sense) names no list of its content.
                if let Err(ProgramChangeRefused::StaleLists(stale)) = &next {
                    let stale: Vec<Nets> = stale.iter().map(|&i| fresh[i].clone()).collect();
                    let b_names = |l: &Nets| all_matches(&b).flat_map(fields).flatten().any(|v| **v == **l);
                    if !stale.iter().any(b_names) {
                        next = cl.forgetting_lists(&stale).with_programs(vec![f], &fresh, &rebind, &cfg);
                    }
                }
                match next {
                    Ok(next) => {
                        set.programs.push(f_set);
                        set.endpoints[i].ingress = Some(id);
                        set.endpoints[i].egress = Some(id);
                        cl = next;
                        assert_same(&cl, &LinearClassifier::new(set.clone()).unwrap(), &keys);
                    }
                    Err(ProgramChangeRefused::NewList | ProgramChangeRefused::StaleLists(_)) => {}
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
        }

        /// Hosts given identities of their own
        /// ([`IdentityClassifier::with_new_host_identity`]), inside the programs'
        /// prefixes or outside every one, one after another, each split from the
        /// prefixes containing it or from a bound host: each is read by every program
        /// there is as its template is (the linear reference over the set with the
        /// host bound, and added to every list holding the template host), and a
        /// program added with fresh lists naming some of them, and some of those
        /// prefixes, tells them apart; a host given an id later is read as its
        /// template by that program too. Refused only where the template's identity
        /// has no free id left, the template lies in other prefixes, or a host is no
        /// new class.
        #[test]
        fn new_host_identities_agree_with_linear(
            a in arb_program(),
            b in arb_program(),
            hosts in prop::collection::vec((arb_host(), 0u8..3, 0u8..3), 1..5),
            news in prop::collection::vec((arb_host(), any::<u64>(), any::<u64>(), any::<bool>(), any::<Option<prop::sample::Index>>(), any::<Option<prop::sample::Index>>()), 1..8),
            picks in arb_picks(16),
        ) {
            let endpoints = distinct_bindings(hosts);
            // a's first rule names some hosts, so a list names a split host's template.
            let mut a = a;
            if let Some(r) = a.tiers.iter_mut().flat_map(|t| &mut t.policies).flat_map(|p| &mut p.rules).next() {
                r.matches.src_nets = Some(endpoints.iter().step_by(2).map(|e| e.net).collect());
            }
            let mut set = PolicySet { programs: vec![a.clone(), b.clone()], endpoints };
            let cfg = BuildConfig::default();
            let mut cl = IdentityClassifier::build(&set, &cfg)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // The prefixes the programs name (classes a fresh list may name).
            let mut prefixes: Vec<IpNet> = [&a, &b]
                .into_iter()
                .flat_map(all_matches)
                .flat_map(|m| fields(m).into_iter().flatten().flat_map(|l| l.iter().copied()).collect::<Vec<_>>())
                .filter(|n| n.prefix_len() < n.max_prefix_len())
                .collect();
            prefixes.sort();
            prefixes.dedup();
            let mut keys = packets(&a, &picks);
            keys.extend(packets(&b, &picks));
            let v4: Vec<u32> = set.endpoints.iter().map(|e| e.net).chain(news.iter().map(|n| n.0))
                .filter_map(|n| match n { IpNet::V4(x) => Some(u32::from(x.addr())), IpNet::V6(_) => None })
                .collect();
            for &x in &v4 {
                for &y in &v4 {
                    keys.push(FlowKey { src: x.into(), dst: y.into(), sport: 1, dport: 80, proto: crate::program::proto::TCP, family: Family::V4, ifindex: 0 });
                }
            }
            // The programs as the classifier was given them (the set's gain the hosts
            // split from a bound host, as `add_like` adds them).
            use super::super::tests::add_like;
            let given = [a.clone(), b.clone()];
            // a's lists as written (the first, most often: it names hosts): a fresh list of the same content as one is stale
            // once a host split from an identity in it (a names it in the known sense
            // no more: only b is named again below).
            let a_lists: Vec<Vec<IpNet>> = all_matches(&a).flat_map(fields).flatten().filter(|l| !l.is_empty()).map(|l| l.to_vec()).collect();
            for (k, (host, src_mask, dst_mask, add, like, known)) in news.into_iter().enumerate() {
                let id = EndpointId(100 + k as u32);
                let was = cl.class(if host.addr().is_ipv4() { Family::V4 } else { Family::V6 }, match host.addr() {
                    std::net::IpAddr::V4(x) => u32::from(x).into(),
                    std::net::IpAddr::V6(x) => u128::from(x),
                });
                let like = like.map(|i| set.endpoints[i.index(set.endpoints.len())].net);
                let template = like.and_then(|l| cl.host_identity(l));
                let binding = EndpointBinding { net: host, endpoint: id, ingress: Some(ProgramId(0)), egress: Some(ProgramId(1)) };
                match cl.with_new_host_identity(host, id, Some(ProgramId(0)), Some(ProgramId(1)), template) {
                    Ok(next) => {
                        let now = next.host_identity(host).expect("bound");
                        prop_assert!(now.identity != was.identity, "an identity of its own");
                        prop_assert_eq!(now.parent_identity, was.identity);
                        if let Some(t) = template {
                            prop_assert!(now.identity != t.identity, "an identity of its own");
                        }
                        cl = next;
                        match (like, template) {
                            (Some(l), Some(_)) => add_like(&mut set, host, l, binding),
                            _ => set.endpoints.push(binding),
                        }
                    }
                    Err(HostChangeRefused::Known(_) | HostChangeRefused::InsideBinding(..)) => continue,
                    Err(HostChangeRefused::NewIdentity(_)) => {
                        // Only a prefix identity whose block is used up (or that has none).
                        let six = host.addr().is_ipv6();
                        let t = template.map_or(was.identity, |t| t.identity);
                        let used_up = cl.blocks.of(six, t).is_none_or(|(n, e)| n == e);
                        let elsewhere = template.is_some_and(|t| t.parent_identity != was.identity || t.six != six);
                        prop_assert!(used_up || elsewhere, "refused with ids free");
                        continue;
                    }
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
                assert_same(&cl, &LinearClassifier::new(set.clone()).unwrap(), &keys);
                if !add {
                    continue;
                }
                // Fresh lists: some bound hosts and some prefixes.
                let subset = |mask: u64| -> Vec<IpNet> {
                    let mut l: Vec<IpNet> = set.endpoints.iter().map(|e| e.net).enumerate()
                        .filter(|(i, _)| mask >> (i % 32) & 1 == 1)
                        .map(|(_, n)| n)
                        .collect();
                    l.extend(prefixes.iter().enumerate().filter(|(i, _)| mask >> (32 + i % 32) & 1 == 1).map(|(_, n)| *n));
                    l
                };
                let (mut src, dst) = (subset(src_mask), subset(dst_mask));
                if let Some(i) = known.filter(|_| !a_lists.is_empty()) {
                    src = a_lists[i.index(a_lists.len().min(2))].clone();
                }
                let tier = crate::fixtures::tier(9, crate::program::TierDefault::Pass, vec![
                    crate::fixtures::policy(90, false, vec![
                        crate::fixtures::rule(0, crate::program::Action::Deny, Match { src_nets: Some(src.clone().into()), not_dst_nets: dst.clone().into(), ..Match::default() }),
                        crate::fixtures::rule(1, crate::program::Action::Allow, Match { dst_nets: Some(dst.clone().into()), ..Match::default() }),
                    ]),
                ]);
                let mut f = given[1].clone();
                f.tiers.insert(0, tier.clone());
                let mut f_set = set.programs[1].clone();
                f_set.tiers.insert(0, tier);
                let p = ProgramId(set.programs.len() as u32);
                let fresh: [Nets; 2] = [src.clone().into(), dst.clone().into()];
                let rebind = [(host, Some(p), Some(p))];
                let mut next = cl.with_programs_merged(vec![f.clone()], &fresh, &rebind, &[], &cfg);
                // A stale fresh list (a split made its known form hold the new host) is
                // forgotten and the change tried again, when b as given (named in the
                // known sense by every such change) names no list of its content.
                if let Err(ProgramChangeRefused::StaleLists(stale)) = &next {
                    let stale: Vec<Nets> = stale.iter().map(|&i| fresh[i].clone()).collect();
                    let given_names = |l: &Nets| all_matches(&given[1]).flat_map(fields).flatten().any(|v| **v == **l);
                    if !stale.iter().any(given_names) {
                        next = cl.forgetting_lists(&stale).with_programs_merged(vec![f], &fresh, &rebind, &[], &cfg);
                    }
                }
                match next {
                    Ok((next, _)) => {
                        set.programs.push(f_set);
                        let e = set.endpoints.last_mut().expect("the host");
                        e.ingress = Some(p);
                        e.egress = Some(p);
                        cl = next;
                        assert_same(&cl, &LinearClassifier::new(set.clone()).unwrap(), &keys);
                    }
                    Err(ProgramChangeRefused::NewList | ProgramChangeRefused::StaleLists(_)) => {}
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
        }

        /// Programs added as new parts, with bindings pointed at them, classify as the
        /// linear reference over the whole set does (every verdict and trace); a
        /// program with a list the build did not see is refused. Also when the last
        /// part is merged with the added programs
        /// ([`IdentityClassifier::with_programs_merged`]): the programs it drops are
        /// bound by no endpoint and are not among those it was asked to keep, and a
        /// later rebind to one is refused.
        #[test]
        fn added_programs_agree_with_linear(
            a in arb_program(),
            b in arb_program(),
            c in arb_program(),
            hosts in prop::collection::vec((arb_host(), 0u8..3, 0u8..3), 1..6),
            moves in prop::collection::vec(
                (any::<prop::sample::Index>(), 0u8..5, 0u8..5, any::<bool>(), any::<Option<prop::sample::Index>>()), 1..6),
            picks in arb_picks(24),
        ) {
            let endpoints = distinct_bindings(hosts);
            let mut a = a;
            if let Some(r) = a.tiers.iter_mut().flat_map(|t| &mut t.policies).flat_map(|p| &mut p.rules).next() {
                r.matches.src_nets = Some(endpoints.iter().step_by(2).map(|e| e.net).collect());
            }
            let mut set = PolicySet { programs: vec![a.clone(), b.clone()], endpoints };
            let cfg = BuildConfig::default();
            let mut cl = IdentityClassifier::build(&set, &cfg)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut keys = packets(&a, &picks);
            keys.extend(packets(&b, &picks));
            for (i, e) in set.endpoints.iter().enumerate() {
                let o = set.endpoints[(i + 1) % set.endpoints.len()].net;
                let (IpNet::V4(x), IpNet::V4(y)) = (e.net, o) else { continue };
                keys.push(FlowKey { src: u32::from(x.addr()).into(), dst: u32::from(y.addr()).into(), sport: 1, dport: 80, proto: crate::program::proto::TCP, family: Family::V4, ifindex: 0 });
            }
            // Mixes of the two programs name only lists the build saw.
            let mixes = [
                Program { tiers: b.tiers.clone(), profiles: a.profiles.clone() },
                Program { tiers: a.tiers.iter().rev().cloned().collect(), profiles: b.profiles.clone() },
            ];
            let mut dropped: Vec<ProgramId> = Vec::new();
            for (round, (which, ig, eg, merge, keep)) in moves.into_iter().enumerate() {
                let add = if round == 2 { vec![c.clone()] } else { vec![mixes[round % 2].clone()] };
                let base = set.programs.len() as u32;
                let prog = |x: u8| match x {
                    0 | 1 => Some(ProgramId(x.into())),
                    2 | 3 => Some(ProgramId(base)),
                    _ => None,
                };
                let i = which.index(set.endpoints.len());
                let net = set.endpoints[i].net;
                let rebind = [(net, prog(ig), prog(eg))];
                let names_dropped = [prog(ig), prog(eg)].into_iter().flatten().any(|p| dropped.contains(&p));
                // A program the caller binds next, which the merge must not drop.
                let keep: Vec<ProgramId> = keep
                    .map(|k| ProgramId(k.index(base as usize) as u32))
                    .filter(|p| !dropped.contains(p))
                    .into_iter()
                    .collect();
                let r = if merge {
                    cl.with_programs_merged(add.clone(), &[], &rebind, &keep, &cfg)
                } else {
                    cl.with_programs(add.clone(), &[], &rebind, &cfg).map(|n| (n, Vec::new()))
                };
                match r {
                    Ok((next, gone)) => {
                        prop_assert!(!names_dropped, "a dropped program was bound again");
                        prop_assert!(next.parts.len() <= cl.parts.len() + 1);
                        prop_assert!(merge || next.parts.len() == cl.parts.len() + 1);
                        set.programs.extend(add);
                        set.endpoints[i].ingress = prog(ig);
                        set.endpoints[i].egress = prog(eg);
                        for p in &gone {
                            prop_assert!(
                                set.endpoints.iter().all(|e| e.ingress != Some(*p) && e.egress != Some(*p)),
                                "a bound program was dropped"
                            );
                            prop_assert!(!keep.contains(p), "a program to keep was dropped");
                        }
                        dropped.extend(gone);
                        cl = next;
                        // The kept programs' count follows the parts.
                        let kept: usize = cl
                            .parts
                            .iter()
                            .flat_map(|p| p.programs.iter())
                            .map(|p| size_of::<Program>() + p.heap_bytes())
                            .sum();
                        prop_assert_eq!(cl.stats.part_program_bytes, kept);
                        prop_assert!(kept >= size_of::<Program>(), "an added part keeps its programs");
                        let compilers: usize = cl.parts.iter().map(|p| p.compiler_bytes).sum();
                        prop_assert_eq!(cl.stats.part_compiler_bytes, compilers);
                        prop_assert!(compilers > 0, "an added part keeps its compiler");
                        let (last, earlier) = cl.parts.split_last().expect("parts");
                        prop_assert!(last.compiler.lock().is_ok_and(|c| c.is_some()));
                        prop_assert!(
                            earlier.iter().all(|p| p.compiler_bytes == 0
                                && p.compiler.lock().is_ok_and(|c| c.is_none())),
                            "only the last part keeps a compiler"
                        );
                    }
                    Err(ProgramChangeRefused::UnknownProgram(p)) => {
                        prop_assert!(dropped.contains(&ProgramId(p)));
                        continue;
                    }
                    Err(ProgramChangeRefused::NewList) => {
                        prop_assert!(round == 2, "a mix was refused");
                        continue;
                    }
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
                assert_same(&cl, &LinearClassifier::new(set.clone()).unwrap(), &keys);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// The single-part front end gives exactly what the part-by-part one gives
        /// (every endpoint, verdict and trace id), on blocks mixing families, bound
        /// and unbound ends, across several chunks.
        #[test]
        fn single_part_front_end_agrees_with_part_by_part(
            a in arb_program(),
            b in arb_program(),
            hosts in prop::collection::vec((arb_host(), 0u8..3, 0u8..3), 0..8),
            picks in arb_picks(40),
        ) {
            let endpoints = distinct_bindings(hosts);
            let mut a = a;
            if let Some(r) = a.tiers.iter_mut().flat_map(|t| &mut t.policies).flat_map(|p| &mut p.rules).next() {
                r.matches.src_nets = Some(endpoints.iter().step_by(2).map(|e| e.net).collect());
            }
            let set = PolicySet { programs: vec![a.clone(), b.clone()], endpoints };
            let cl = IdentityClassifier::build(&set, &BuildConfig::default())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(cl.parts.len(), 1);
            let mut keys = packets(&a, &picks);
            keys.extend(packets(&b, &picks));
            let addr = |n: IpNet| match n {
                IpNet::V4(x) => (Family::V4, u128::from(u32::from(x.addr()))),
                IpNet::V6(x) => (Family::V6, u128::from(x.addr())),
            };
            for e in &set.endpoints {
                for o in &set.endpoints {
                    let ((f, s), (g, d)) = (addr(e.net), addr(o.net));
                    if f == g {
                        keys.push(FlowKey { src: s, dst: d, sport: 1, dport: 80, proto: crate::program::proto::TCP, family: f, ifindex: 0 });
                    }
                }
            }
            let mut fast = vec![FlowVerdicts::default(); keys.len()];
            let mut slow = fast.clone();
            cl.classify(&keys, &mut fast);
            cl.classify_by_parts(&keys, &mut slow);
            prop_assert_eq!(fast, slow);
        }
    }

    pub(crate) fn assert_same(a: &dyn Classify, b: &dyn Classify, keys: &[FlowKey]) {
        let mut x = vec![FlowVerdicts::default(); keys.len()];
        let mut y = x.clone();
        a.classify(keys, &mut x);
        b.classify(keys, &mut y);
        let r = |c: &dyn Classify, s: Option<(EndpointId, crate::program::Verdicts)>| {
            s.map(|(id, v)| {
                (
                    id,
                    v.enforced.verdict,
                    c.trace(v.enforced.trace).to_vec(),
                    v.pending.verdict,
                    c.trace(v.pending.trace).to_vec(),
                )
            })
        };
        for (k, (g, w)) in keys.iter().zip(x.iter().zip(&y)) {
            assert_eq!(r(a, g.egress), r(b, w.egress), "egress of {k:?}");
            assert_eq!(r(a, g.ingress), r(b, w.ingress), "ingress of {k:?}");
        }
    }
}
