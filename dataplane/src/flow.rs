//! The per-worker flow table: connection tracking plus cached verdicts.
//!
//! This module owns [`FlowTable`], one per worker, never shared. It promises:
//!
//! - **Bounded memory.** The table is allocated once with `capacity` slots (rounded
//!   up to a multiple of [`WAYS`]) and never grows: 128 bytes per [`FlowEntry`] plus
//!   64 bytes of metadata per bucket of 8 slots (136 bytes per flow all in).
//! - **Seeded hashing.** Keys come from the wire, so bucket choice uses a hash seeded
//!   per table ([`KeyHasher`], a keyed multiply-fold over the fixed-size key); an
//!   attacker cannot aim flows at one bucket without the seed.
//! - **One entry per connection.** Both directions map to one canonical [`ConnKey`];
//!   [`Dir`] tells which side sent a packet, and the entry remembers which side
//!   initiated.
//! - **Set-associative, two choices.** A key may live in one of two buckets of 8 ways
//!   (like DPDK's `rte_hash`, without cuckoo displacement). A lookup reads one 64-byte
//!   metadata line per bucket (16-bit tags and coarse last-seen stamps), matches the
//!   eight tags at once ([`crate::arch::tags`]) and compares full keys only on a tag
//!   match.
//! - **Eviction when full.** When both buckets are full, the entry idle the longest
//!   (oldest coarse stamp among the 16 candidates; first in bucket order on ties) is
//!   evicted, counted, and its [`FlowRecord`] handed out with [`EndReason::Evicted`];
//!   then the insert goes on. Entries still awaiting their verdict in the current
//!   batch are never evicted.
//! - **Conntrack.** Each entry runs a TCP state machine (SYN, SYN-ACK, ACK, FIN each
//!   way, RST; mid-stream pickup counts as established, like Linux's `tcp_loose`) and
//!   a per-state idle timeout ([`Timeouts`], defaults from felix's BPF conntrack). An
//!   expired entry is a new connection on its next packet; [`FlowTable::sweep`]
//!   retires expired entries incrementally.
//! - **Cached verdicts with their generation.** An entry holds the [`FlowVerdicts`] of
//!   the latest classification of its initiator's key, the classifier generation they
//!   came from, and separately the *applied* enforced verdict with the generation it
//!   was decided in (existing connections keep it across policy changes).
//!
//! [`model::ModelTable`] is the slow, obviously-correct twin (a plain vector of
//! buckets); a proptest checks both agree on every lookup, insert and eviction.

use crate::arch::huge::{AllocError, HugeSlice};
use crate::arch::tags::match_tags;
use crate::packet::{ConnClass, ConnTuple, tcp_flags};
use crate::program::{
    Decision, EndpointId, Family, FlowKey, FlowVerdicts, TraceId, Verdict, Verdicts,
};

/// Slots per bucket.
pub const WAYS: usize = 8;

/// Which end of a connection sent a packet, relative to the canonical key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// From side `a` to side `b`.
    AtoB,
    /// From side `b` to side `a`.
    BtoA,
}

impl Dir {
    /// The other direction.
    pub const fn flip(self) -> Dir {
        match self {
            Dir::AtoB => Dir::BtoA,
            Dir::BtoA => Dir::AtoB,
        }
    }
}

/// The canonical connection key: both directions of a connection produce the same
/// value (see [`ConnKey::canonical`]).
///
/// Besides the two addresses, the key is one word ([`ConnKey::tail`]): ports,
/// protocol, family and class packed together, so hashing and comparing a key are a
/// few word operations rather than one per field.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Side `a` address.
    pub a: u128,
    /// Side `b` address.
    pub b: u128,
    /// Low to high byte: `pa` (2 bytes), `pb` (2), `proto`, `family`, `class`, 0.
    tail: u64,
}

impl std::fmt::Debug for ConnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnKey")
            .field("a", &self.a)
            .field("b", &self.b)
            .field("pa", &self.pa())
            .field("pb", &self.pb())
            .field("proto", &self.proto())
            .field("family", &self.family())
            .field("class", &self.class())
            .finish()
    }
}

/// [`ConnClass`] as stored in a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KeyClass {
    /// TCP/UDP/SCTP.
    Ports = 0,
    /// ICMP query pair.
    Query = 1,
    /// One-way ICMP.
    OneWay = 2,
    /// Other protocols.
    Generic = 3,
}

/// The family byte of a key tail (only ever written from a [`Family`]).
#[inline]
fn family_of(tail: u64) -> Family {
    if (tail >> 40) as u8 == Family::V6 as u8 {
        Family::V6
    } else {
        Family::V4
    }
}

/// The class byte of a key tail (only ever written from a [`KeyClass`]).
#[inline]
fn class_of(tail: u64) -> KeyClass {
    match (tail >> 48) as u8 {
        0 => KeyClass::Ports,
        1 => KeyClass::Query,
        2 => KeyClass::OneWay,
        _ => KeyClass::Generic,
    }
}

impl ConnKey {
    /// The all-zero key (IPv4, class `Ports`), for initialising scratch space.
    pub const EMPTY: ConnKey = ConnKey {
        a: 0,
        b: 0,
        tail: (Family::V4 as u64) << 40,
    };

    /// A key from its parts (no canonical ordering is applied: see
    /// [`ConnKey::canonical`] for the key of a packet).
    #[inline(always)]
    pub fn new(
        a: u128,
        pa: u16,
        b: u128,
        pb: u16,
        proto: u8,
        family: Family,
        class: KeyClass,
    ) -> Self {
        ConnKey {
            a,
            b,
            tail: u64::from(pa)
                | (u64::from(pb) << 16)
                | (u64::from(proto) << 32)
                | ((family as u64) << 40)
                | ((class as u64) << 48),
        }
    }

    /// Ports, protocol, family and class in one word (low to high byte: `pa`, `pb`,
    /// `proto`, `family`, `class`; the top byte is 0): what the hash mixes and what a
    /// flow entry stores next to the addresses.
    #[inline(always)]
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Side `a` port (ICMP query: the id; one-way ICMP: the type).
    #[inline]
    pub fn pa(&self) -> u16 {
        self.tail as u16
    }

    /// Side `b` port (ICMP query: the request type; one-way ICMP: the code).
    #[inline]
    pub fn pb(&self) -> u16 {
        (self.tail >> 16) as u16
    }

    /// IP protocol.
    #[inline]
    pub fn proto(&self) -> u8 {
        (self.tail >> 32) as u8
    }

    /// Address family.
    #[inline]
    pub fn family(&self) -> Family {
        family_of(self.tail)
    }

    /// How directions pair.
    #[inline]
    pub fn class(&self) -> KeyClass {
        class_of(self.tail)
    }

    /// The canonical key of a packet's tuple and the direction the packet travels.
    ///
    /// Ports and generic tuples order the two (address, port) ends; ICMP queries order
    /// the addresses only (id and request type are shared by both messages) and, when
    /// both addresses are equal, take the direction from request/reply; one-way ICMP
    /// is never paired (every packet is `AtoB` from its sender).
    #[inline]
    pub fn canonical(t: &ConnTuple) -> (ConnKey, Dir) {
        let mk = |a, pa, b, pb, class| ConnKey::new(a, pa, b, pb, t.proto, t.family, class);
        match t.class {
            ConnClass::Ports | ConnClass::Generic => {
                let class = if t.class == ConnClass::Ports {
                    KeyClass::Ports
                } else {
                    KeyClass::Generic
                };
                // Order the two ends without a branch: replies make the outcome a
                // coin flip for a branch predictor.
                let swap = (t.src, t.sport) > (t.dst, t.dport);
                use std::hint::select_unpredictable as pick;
                let (a, b) = (pick(swap, t.dst, t.src), pick(swap, t.src, t.dst));
                let (pa, pb) = (pick(swap, t.dport, t.sport), pick(swap, t.sport, t.dport));
                (mk(a, pa, b, pb, class), pick(swap, Dir::BtoA, Dir::AtoB))
            }
            ConnClass::Query { reply } => {
                let src_is_a = t.src < t.dst || (t.src == t.dst && !reply);
                if src_is_a {
                    (
                        mk(t.src, t.sport, t.dst, t.dport, KeyClass::Query),
                        Dir::AtoB,
                    )
                } else {
                    (
                        mk(t.dst, t.sport, t.src, t.dport, KeyClass::Query),
                        Dir::BtoA,
                    )
                }
            }
            ConnClass::OneWay => (
                mk(t.src, t.sport, t.dst, t.dport, KeyClass::OneWay),
                Dir::AtoB,
            ),
        }
    }
}

/// A seeded hash for connection keys. The same seed gives the same value in every
/// table and in the replay dispatcher, which is what makes dispatch symmetric.
///
/// The key has a fixed shape (two 128-bit addresses and one word of ports, protocol,
/// family and class), so instead of a general streaming hasher it is folded in three
/// 64×64→128-bit multiplies, each folding the product's halves together (the
/// wyhash/foldhash mixing step), with every input word first XORed with a secret
/// derived from the seed. Addresses (low words, high words) and the port word are
/// each mixed non-linearly before they meet, so flipping the same bits in an address
/// and a port does not cancel out; without the seed, where a key lands is unknown.
#[derive(Clone, Debug)]
pub struct KeyHasher {
    secrets: [u64; 6],
}

/// 64×64→128-bit multiply, halves XORed.
#[inline(always)]
fn folded_multiply(x: u64, y: u64) -> u64 {
    let p = u128::from(x) * u128::from(y);
    (p as u64) ^ ((p >> 64) as u64)
}

impl KeyHasher {
    /// A hasher with this seed.
    pub fn new(seed: u64) -> Self {
        // splitmix64: well-spread, distinct secrets from any seed (0 included).
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        KeyHasher {
            secrets: [next(), next(), next(), next(), next(), next()],
        }
    }

    /// The hash of a canonical key.
    #[inline]
    pub fn hash(&self, k: &ConnKey) -> u64 {
        let s = &self.secrets;
        let lo = folded_multiply(k.a as u64 ^ s[0], k.b as u64 ^ s[1]);
        let hi = folded_multiply((k.a >> 64) as u64 ^ s[2], (k.b >> 64) as u64 ^ s[3]);
        folded_multiply(lo ^ hi.rotate_left(23) ^ s[4], k.tail() ^ s[5])
    }
}

/// Idle timeouts per conntrack state, in nanoseconds. Defaults are felix's BPF
/// conntrack defaults (`BPFConntrackTimeouts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP before the handshake completed (felix `TCPSynSent`, 20 s).
    pub tcp_syn: u64,
    /// Established TCP (felix `TCPEstablished`, 1 h).
    pub tcp_established: u64,
    /// TCP after FINs from both sides (felix `TCPFinsSeen`, 30 s).
    pub tcp_fins_seen: u64,
    /// TCP after an RST (felix `TCPResetSeen`, 40 s).
    pub tcp_reset: u64,
    /// UDP (felix `UDPTimeout`, 60 s).
    pub udp: u64,
    /// ICMP (felix `ICMPTimeout`, 5 s).
    pub icmp: u64,
    /// Other protocols, SCTP included (felix `GenericTimeout`, 10 min).
    pub generic: u64,
}

const SEC: u64 = 1_000_000_000;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: 20 * SEC,
            tcp_established: 3600 * SEC,
            tcp_fins_seen: 30 * SEC,
            tcp_reset: 40 * SEC,
            udp: 60 * SEC,
            icmp: 5 * SEC,
            generic: 600 * SEC,
        }
    }
}

/// [`Timeouts`] indexed by [`timeout_class`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutTable([u64; 8]);

impl From<&Timeouts> for TimeoutTable {
    fn from(t: &Timeouts) -> Self {
        TimeoutTable([
            t.tcp_syn,
            t.tcp_established,
            t.tcp_fins_seen,
            t.tcp_reset,
            t.udp,
            t.icmp,
            t.generic,
            t.generic,
        ])
    }
}

/// Which of the [`Timeouts`] applies to a connection in `state` over `proto` (the
/// index into a [`TimeoutTable`]); [`FlowEntry::timeout`] is the reference.
pub const fn timeout_class(state: ConnState, proto: u8) -> u8 {
    use crate::program::proto;
    match state {
        ConnState::SynSent | ConnState::SynReceived => 0,
        ConnState::Established | ConnState::FinWait => 1,
        ConnState::FinsSeen => 2,
        ConnState::Reset => 3,
        ConnState::Open => match proto {
            proto::UDP => 4,
            proto::ICMP | proto::ICMPV6 => 5,
            _ => 6,
        },
    }
}

/// Connection-tracking state of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnState {
    /// Not TCP: datagram flows have no handshake.
    Open = 0,
    /// TCP: SYN from the initiator seen.
    SynSent = 1,
    /// TCP: SYN-ACK from the responder seen.
    SynReceived = 2,
    /// TCP: handshake done (or picked up mid-stream).
    Established = 3,
    /// TCP: a FIN from one side.
    FinWait = 4,
    /// TCP: FINs from both sides.
    FinsSeen = 5,
    /// TCP: RST seen.
    Reset = 6,
}

impl ConnState {
    /// Stable lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            ConnState::Open => "open",
            ConnState::SynSent => "syn_sent",
            ConnState::SynReceived => "syn_received",
            ConnState::Established => "established",
            ConnState::FinWait => "fin_wait",
            ConnState::FinsSeen => "fins_seen",
            ConnState::Reset => "reset",
        }
    }

    /// Whether the connection is over (both FINs or an RST): a new SYN starts a new one.
    pub const fn is_closed(self) -> bool {
        matches!(self, ConnState::FinsSeen | ConnState::Reset)
    }
}

// Entry flag bits.
const F_INIT_B: u8 = 1 << 0; // the initiator is side b
const F_ACTIVE: u8 = 1 << 1; // packets since the last interval export
const F_STARTED: u8 = 1 << 2; // created since the last interval export
const F_FIN_A: u8 = 1 << 3;
const F_FIN_B: u8 = 1 << 4;
const F_AWAITING: u8 = 1 << 5; // inserted in this batch, verdict not yet known
const F_APPLIED_ALLOW: u8 = 1 << 6; // the enforced verdict being applied is allow

// Verdict bits (packed FlowVerdicts).
const V_EGRESS: u8 = 1 << 0;
const V_INGRESS: u8 = 1 << 1;
const V_E_ENF: u8 = 1 << 2;
const V_E_PEND: u8 = 1 << 3;
const V_I_ENF: u8 = 1 << 4;
const V_I_PEND: u8 = 1 << 5;
const V_PEND_DENY: u8 = 1 << 6; // derived: some present view's pending verdict is deny

/// One tracked connection: 128 bytes, 64-byte aligned (two cache lines). The first
/// line holds what every hit reads (key, state, flags, generation, last seen, packet
/// counters); the second the byte counters, times, the interface and the packed
/// verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct FlowEntry {
    a: u128,
    b: u128,
    /// [`ConnKey::tail`].
    tail: u64,
    generation: u32,
    state: ConnState,
    flags: u8,
    vbits: u8,
    /// [`timeout_class`] of `state` and the protocol, kept with every state change
    /// so a hit checks expiry with one table load instead of branching on the state.
    tclass: u8,
    last_ns: u64,
    /// Packets this interval, [from a, from b].
    packets: [u32; 2],
    // ---- second cache line
    /// Bytes this interval, [from a, from b].
    bytes: [u64; 2],
    first_ns: u64,
    interval_first_ns: u64,
    applied_generation: u32,
    /// Initiator's ICMP type (high byte) and code (low byte), for re-classification.
    icmp_type_code: u16,
    /// Interface of the connection's first packet (part of the initiator's key).
    ifindex: u16,
    /// Packed verdicts: egress (endpoint, enforced trace, pending trace), then ingress.
    ids: [u32; 6],
}

const _: () = assert!(std::mem::size_of::<FlowEntry>() == 128);
const _: () = assert!(std::mem::offset_of!(FlowEntry, packets) + 8 <= 64);

/// Why a flow's record is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// TCP closed (both FINs or RST) and its close timeout passed.
    Closed,
    /// Idle longer than its state's timeout.
    Timeout,
    /// Evicted to make room for a new flow.
    Evicted,
    /// Replaced by a new connection on the same tuple (e.g. SYN after close).
    Replaced,
    /// Still open when the run ended (replay) or the table was drained.
    Drained,
}

impl EndReason {
    /// Stable lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::Timeout => "timeout",
            EndReason::Evicted => "evicted",
            EndReason::Replaced => "replaced",
            EndReason::Drained => "drained",
        }
    }
}

/// A flow's activity over one export interval (or up to its end): what flow logs
/// aggregate. Directions are relative to the initiator: `fwd` is what the
/// initiator sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// The initiator's classification key (src = initiator).
    pub key: FlowKey,
    /// Latest verdicts of the initiator's key (traces from `generation`).
    pub verdicts: FlowVerdicts,
    /// Classifier generation of `verdicts`.
    pub generation: u32,
    /// The enforced verdict being applied to the connection (may predate `generation`
    /// when a policy change kept an existing connection).
    pub applied: Verdict,
    /// Generation in which `applied` was decided.
    pub applied_generation: u32,
    /// Connection-tracking state at the time of the record.
    pub state: ConnState,
    /// First packet of the connection (ns).
    pub first_ns: u64,
    /// First packet within this record's interval (ns).
    pub interval_first_ns: u64,
    /// Last packet (ns).
    pub last_ns: u64,
    /// Packets the initiator sent in this interval.
    pub packets_fwd: u64,
    /// Bytes the initiator sent in this interval.
    pub bytes_fwd: u64,
    /// Packets the responder sent in this interval.
    pub packets_rev: u64,
    /// Bytes the responder sent in this interval.
    pub bytes_rev: u64,
    /// The connection started in this interval.
    pub started: bool,
    /// `Some` when the connection ended with this record.
    pub end: Option<EndReason>,
}

impl FlowEntry {
    const EMPTY: FlowEntry = FlowEntry {
        a: 0,
        b: 0,
        tail: 0,
        generation: 0,
        state: ConnState::Open,
        flags: 0,
        vbits: 0,
        tclass: timeout_class(ConnState::Open, 0),
        last_ns: 0,
        packets: [0; 2],
        bytes: [0; 2],
        first_ns: 0,
        interval_first_ns: 0,
        applied_generation: 0,
        icmp_type_code: 0,
        ifindex: 0,
        ids: [0; 6],
    };

    /// The canonical key.
    #[inline]
    pub fn key(&self) -> ConnKey {
        ConnKey {
            a: self.a,
            b: self.b,
            tail: self.tail,
        }
    }

    /// Whether the entry holds `k`: addresses and tail word compared whole, without a
    /// branch per field.
    #[inline]
    fn key_eq(&self, k: &ConnKey) -> bool {
        ((self.a ^ k.a) | (self.b ^ k.b)) == 0 && self.tail == k.tail
    }

    /// The direction the initiator sends in.
    #[inline]
    pub fn initiator_dir(&self) -> Dir {
        if self.flags & F_INIT_B != 0 {
            Dir::BtoA
        } else {
            Dir::AtoB
        }
    }

    /// Connection-tracking state.
    #[inline]
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// Generation of the cached verdicts.
    #[inline]
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The entry was inserted in this batch and has no verdict yet.
    #[inline]
    pub fn awaiting_verdict(&self) -> bool {
        self.flags & F_AWAITING != 0
    }

    /// Marks the entry as waiting for a (re-)classification in this batch: further
    /// packets of the batch wait too, and eviction skips it.
    #[inline]
    pub fn set_awaiting(&mut self) {
        self.flags |= F_AWAITING;
    }

    /// Ends a wait started by [`FlowEntry::set_awaiting`] without new verdicts.
    #[inline]
    pub fn clear_awaiting(&mut self) {
        self.flags &= !F_AWAITING;
    }

    /// The enforced verdict applied to the connection.
    #[inline]
    pub fn applied(&self) -> Verdict {
        if self.flags & F_APPLIED_ALLOW != 0 {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }

    /// Combined pending verdict of the cached verdicts.
    #[inline]
    pub fn pending(&self) -> Verdict {
        if self.vbits & V_PEND_DENY != 0 {
            Verdict::Deny
        } else {
            Verdict::Allow
        }
    }

    /// Last packet time (ns).
    #[inline]
    pub fn last_ns(&self) -> u64 {
        self.last_ns
    }

    /// First packet time (ns).
    #[inline]
    pub fn first_ns(&self) -> u64 {
        self.first_ns
    }

    /// The cached verdicts, unpacked.
    pub fn verdicts(&self) -> FlowVerdicts {
        let d = |allow: bool, t: u32| Decision {
            verdict: if allow { Verdict::Allow } else { Verdict::Deny },
            trace: TraceId(t),
        };
        let v = self.vbits;
        let i = &self.ids;
        FlowVerdicts {
            egress: (v & V_EGRESS != 0).then(|| {
                (
                    EndpointId(i[0]),
                    Verdicts {
                        enforced: d(v & V_E_ENF != 0, i[1]),
                        pending: d(v & V_E_PEND != 0, i[2]),
                    },
                )
            }),
            ingress: (v & V_INGRESS != 0).then(|| {
                (
                    EndpointId(i[3]),
                    Verdicts {
                        enforced: d(v & V_I_ENF != 0, i[4]),
                        pending: d(v & V_I_PEND != 0, i[5]),
                    },
                )
            }),
        }
    }

    /// Stores verdicts from classifier generation `generation`. The applied enforced
    /// verdict follows them when `apply_enforced` (new connections, denied flows, or
    /// re-evaluation of existing connections requested); otherwise it is kept.
    pub fn set_verdicts(&mut self, fv: &FlowVerdicts, generation: u32, apply_enforced: bool) {
        let mut v = 0u8;
        let allow = |d: &Decision| d.verdict == Verdict::Allow;
        if let Some((ep, vs)) = fv.egress {
            v |= V_EGRESS;
            v |= if allow(&vs.enforced) { V_E_ENF } else { 0 };
            v |= if allow(&vs.pending) { V_E_PEND } else { 0 };
            self.ids[0] = ep.0;
            self.ids[1] = vs.enforced.trace.0;
            self.ids[2] = vs.pending.trace.0;
        } else {
            self.ids[..3].fill(0);
        }
        if let Some((ep, vs)) = fv.ingress {
            v |= V_INGRESS;
            v |= if allow(&vs.enforced) { V_I_ENF } else { 0 };
            v |= if allow(&vs.pending) { V_I_PEND } else { 0 };
            self.ids[3] = ep.0;
            self.ids[4] = vs.enforced.trace.0;
            self.ids[5] = vs.pending.trace.0;
        } else {
            self.ids[3..].fill(0);
        }
        let deny_e = v & V_EGRESS != 0 && v & V_E_PEND == 0;
        let deny_i = v & V_INGRESS != 0 && v & V_I_PEND == 0;
        if deny_e || deny_i {
            v |= V_PEND_DENY;
        }
        self.vbits = v;
        self.generation = generation;
        self.flags &= !F_AWAITING;
        if apply_enforced {
            self.applied_generation = generation;
            if fv.enforced() == Verdict::Allow {
                self.flags |= F_APPLIED_ALLOW;
            } else {
                self.flags &= !F_APPLIED_ALLOW;
            }
        }
    }

    /// The initiator's classification key (ifindex of its first packet).
    pub fn initiator_key(&self) -> FlowKey {
        let init_a = self.initiator_dir() == Dir::AtoB;
        let (src, dst) = if init_a {
            (self.a, self.b)
        } else {
            (self.b, self.a)
        };
        let k = self.key();
        let (sport, dport) = match k.class() {
            KeyClass::Ports => {
                if init_a {
                    (k.pa(), k.pb())
                } else {
                    (k.pb(), k.pa())
                }
            }
            KeyClass::Query => (self.icmp_type_code >> 8, self.icmp_type_code & 0xff),
            KeyClass::OneWay => (k.pa(), k.pb()),
            KeyClass::Generic => (0, 0),
        };
        FlowKey {
            src,
            dst,
            sport,
            dport,
            proto: k.proto(),
            family: k.family(),
            ifindex: self.ifindex,
        }
    }

    /// Starts tracking a new connection whose first packet is `key` travelling in
    /// `dir`. The verdicts are set later ([`FlowEntry::set_verdicts`]).
    pub fn start(&mut self, ck: &ConnKey, dir: Dir, key: &FlowKey, tcp_flags: u8, now: u64) {
        *self = FlowEntry::EMPTY;
        self.a = ck.a;
        self.b = ck.b;
        self.tail = ck.tail;
        self.ifindex = key.ifindex;
        self.flags = F_AWAITING | F_STARTED | if dir == Dir::BtoA { F_INIT_B } else { 0 };
        self.icmp_type_code = ((key.sport & 0xff) << 8) | (key.dport & 0xff);
        self.first_ns = now;
        self.interval_first_ns = now;
        self.last_ns = now;
        self.state = if key.proto == crate::program::proto::TCP && ck.class() == KeyClass::Ports {
            let syn_only = tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
            if syn_only {
                ConnState::SynSent
            } else {
                // Mid-stream pickup (capture started late, table evicted, ...).
                ConnState::Established
            }
        } else {
            ConnState::Open
        };
        if tcp_flags & tcp_flags::RST != 0 && self.state != ConnState::Open {
            self.state = ConnState::Reset;
        }
        self.tclass = timeout_class(self.state, self.key().proto());
    }

    /// Whether a packet in `dir` with `flags` opens a new connection on this tuple
    /// (a fresh SYN from either side after the old one closed).
    #[inline]
    pub fn is_reopen(&self, flags: u8) -> bool {
        self.state.is_closed()
            && flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN
    }

    /// Accounts one packet of `len` bytes in `dir` at `now` and advances the TCP state.
    #[inline]
    pub fn on_packet(&mut self, dir: Dir, flags: u8, len: u32, now: u64) {
        let side = match dir {
            Dir::AtoB => 0,
            Dir::BtoA => 1,
        };
        if self.flags & F_ACTIVE == 0 {
            self.flags |= F_ACTIVE;
            self.interval_first_ns = now;
        }
        self.packets[side] = self.packets[side].saturating_add(1);
        self.bytes[side] = self.bytes[side].saturating_add(u64::from(len));
        self.last_ns = self.last_ns.max(now);
        // Only the handshake states, FIN and RST move the state machine: ordinary
        // segments of an established or closing connection (and datagrams, whose
        // flags are 0) skip it.
        let handshake = matches!(self.state, ConnState::SynSent | ConnState::SynReceived);
        if (flags & (tcp_flags::FIN | tcp_flags::RST) != 0 && self.state != ConnState::Open)
            || handshake
        {
            self.tcp_transition(dir, flags);
            self.tclass = timeout_class(self.state, self.key().proto());
        }
    }

    fn tcp_transition(&mut self, dir: Dir, flags: u8) {
        use tcp_flags::{ACK, FIN, RST, SYN};
        let from_initiator = dir == self.initiator_dir();
        if flags & RST != 0 {
            self.state = ConnState::Reset;
            return;
        }
        self.state = match self.state {
            ConnState::SynSent if !from_initiator && flags & (SYN | ACK) == SYN | ACK => {
                ConnState::SynReceived
            }
            ConnState::SynReceived if from_initiator && flags & (SYN | ACK) == ACK => {
                ConnState::Established
            }
            s => s,
        };
        if flags & FIN != 0 {
            self.flags |= match dir {
                Dir::AtoB => F_FIN_A,
                Dir::BtoA => F_FIN_B,
            };
            self.state = if self.flags & (F_FIN_A | F_FIN_B) == F_FIN_A | F_FIN_B {
                ConnState::FinsSeen
            } else {
                ConnState::FinWait
            };
        }
    }

    /// The idle timeout of the entry's current state.
    #[inline]
    pub fn timeout(&self, t: &Timeouts) -> u64 {
        use crate::program::proto;
        match self.state {
            ConnState::SynSent | ConnState::SynReceived => t.tcp_syn,
            ConnState::Established | ConnState::FinWait => t.tcp_established,
            ConnState::FinsSeen => t.tcp_fins_seen,
            ConnState::Reset => t.tcp_reset,
            ConnState::Open => match self.key().proto() {
                proto::UDP => t.udp,
                proto::ICMP | proto::ICMPV6 => t.icmp,
                _ => t.generic,
            },
        }
    }

    /// Whether the entry has been idle past its timeout at `now`.
    #[inline]
    pub fn is_expired(&self, now: u64, t: &Timeouts) -> bool {
        now.saturating_sub(self.last_ns) > self.timeout(t)
    }

    /// [`FlowEntry::is_expired`] with the timeouts laid out by class
    /// ([`FlowTable::timeout_table`]): one load, no branch on the state.
    #[inline]
    pub fn is_expired_by(&self, now: u64, table: &TimeoutTable) -> bool {
        now.saturating_sub(self.last_ns) > table.0[usize::from(self.tclass & 7)]
    }

    /// The record of this entry's activity since the last export.
    pub fn record(&self, end: Option<EndReason>) -> FlowRecord {
        let (fwd, rev) = match self.initiator_dir() {
            Dir::AtoB => (0, 1),
            Dir::BtoA => (1, 0),
        };
        FlowRecord {
            key: self.initiator_key(),
            verdicts: self.verdicts(),
            generation: self.generation,
            applied: self.applied(),
            applied_generation: self.applied_generation,
            state: self.state,
            first_ns: self.first_ns,
            interval_first_ns: self.interval_first_ns,
            last_ns: self.last_ns,
            packets_fwd: u64::from(self.packets[fwd]),
            bytes_fwd: self.bytes[fwd],
            packets_rev: u64::from(self.packets[rev]),
            bytes_rev: self.bytes[rev],
            started: self.flags & F_STARTED != 0,
            end,
        }
    }

    /// Whether the entry saw packets or started since the last export.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.flags & (F_ACTIVE | F_STARTED) != 0
    }

    /// Resets the interval counters after an export.
    fn reset_interval(&mut self) {
        self.packets = [0; 2];
        self.bytes = [0; 2];
        self.flags &= !(F_ACTIVE | F_STARTED);
    }
}

/// Metadata of one bucket: one cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Bucket {
    /// 0 = empty slot; otherwise the key's tag (never 0).
    tags: [u16; WAYS],
    /// Coarse last-seen stamp per slot ([`stamp`]).
    stamps: [u32; WAYS],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

/// The coarse time used for LRU choice: packet time in units of 2^20 ns (≈1 ms).
/// Ages are compared with wrapping arithmetic, so the ~52-day wrap is harmless for
/// anything idle less than half of that.
#[inline]
pub const fn stamp(now: u64) -> u32 {
    (now >> 20) as u32
}

/// Where a key may live and how it is tagged, all from one hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// First-choice bucket.
    pub b1: usize,
    /// Second-choice bucket (may equal `b1`).
    pub b2: usize,
    /// Tag (never 0).
    pub tag: u16,
}

/// Bucket choice from a key hash for a table of `nbuckets` (shared with the model).
#[inline]
pub fn placement(hash: u64, nbuckets: usize) -> Placement {
    let n = nbuckets as u64;
    let b1 = ((hash & 0xffff_ffff) * n) >> 32;
    let b2 = ((hash >> 32) * n) >> 32;
    let tag = ((hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as u16) | 1;
    Placement {
        b1: b1 as usize,
        b2: b2 as usize,
        tag,
    }
}

/// Configuration of a [`FlowTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTableConfig {
    /// Maximum number of tracked connections (rounded up to a multiple of [`WAYS`]).
    pub capacity: usize,
    /// Hash seed (use a random one in production; fixed in tests).
    pub seed: u64,
    /// Idle timeouts.
    pub timeouts: Timeouts,
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        FlowTableConfig {
            capacity: 1 << 16,
            seed: 0x7469_6572_6761_7465,
            timeouts: Timeouts::default(),
        }
    }
}

/// Counters of a flow table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTableStats {
    /// Lookups that found their connection.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Connections inserted.
    pub inserts: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Inserts refused because every candidate was awaiting its verdict.
    pub insert_failures: u64,
    /// Entries retired by timeout (sweep or reuse).
    pub expired: u64,
}

impl FlowTableStats {
    /// Adds another table's counters.
    pub fn add(&mut self, o: &FlowTableStats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.inserts += o.inserts;
        self.evictions += o.evictions;
        self.insert_failures += o.insert_failures;
        self.expired += o.expired;
    }
}

/// A slot index in a [`FlowTable`].
pub type Slot = u32;

/// The per-worker flow table (see the module documentation).
#[derive(Debug)]
pub struct FlowTable {
    /// Both in transparent huge pages when large (`arch::huge`): lookups land on
    /// random buckets and entries.
    buckets: HugeSlice<Bucket>,
    entries: HugeSlice<FlowEntry>,
    hasher: KeyHasher,
    timeouts: Timeouts,
    timeout_table: TimeoutTable,
    len: usize,
    sweep_cursor: usize,
    stats: FlowTableStats,
}

impl FlowTable {
    /// Allocates a table (all memory is allocated here, never later). Panics if the
    /// memory cannot be allocated; [`FlowTable::try_new`] reports it instead.
    pub fn new(cfg: FlowTableConfig) -> Self {
        Self::try_new(cfg).unwrap_or_else(|e| panic!("flow table: {e}"))
    }

    /// Bytes a table of `capacity` slots holds (entries and bucket metadata), `None`
    /// when that overflows.
    pub fn memory_for(capacity: usize) -> Option<usize> {
        let nbuckets = capacity.max(1).div_ceil(WAYS);
        let entries = nbuckets
            .checked_mul(WAYS)?
            .checked_mul(size_of::<FlowEntry>())?;
        entries.checked_add(nbuckets.checked_mul(size_of::<Bucket>())?)
    }

    /// Allocates a table, or reports that its memory cannot be allocated (the
    /// capacity is often a user's choice).
    pub fn try_new(cfg: FlowTableConfig) -> Result<Self, AllocError> {
        let nbuckets = cfg.capacity.max(1).div_ceil(WAYS);
        let too_big = AllocError {
            items: cfg.capacity,
            item_bytes: size_of::<FlowEntry>(),
        };
        // Slots are addressed by a `Slot` (u32).
        let slots = nbuckets
            .checked_mul(WAYS)
            .filter(|&n| Slot::try_from(n).is_ok())
            .ok_or(too_big)?;
        Ok(FlowTable {
            buckets: HugeSlice::try_from_elem(
                Bucket {
                    tags: [0; WAYS],
                    stamps: [0; WAYS],
                },
                nbuckets,
            )?,
            entries: HugeSlice::try_from_elem(FlowEntry::EMPTY, slots)?,
            hasher: KeyHasher::new(cfg.seed),
            timeouts: cfg.timeouts,
            timeout_table: TimeoutTable::from(&cfg.timeouts),
            len: 0,
            sweep_cursor: 0,
            stats: FlowTableStats::default(),
        })
    }

    /// Number of slots (the hard bound on tracked connections).
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Number of tracked connections.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of memory held by the table (entries + bucket metadata).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries) + std::mem::size_of_val(&*self.buckets)
    }

    /// Counters so far.
    pub fn stats(&self) -> FlowTableStats {
        self.stats
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The timeouts in force, by [`timeout_class`].
    pub fn timeout_table(&self) -> &TimeoutTable {
        &self.timeout_table
    }

    /// The table's key hash (seeded).
    #[inline]
    pub fn hash(&self, k: &ConnKey) -> u64 {
        self.hasher.hash(k)
    }

    /// Bucket choice for a hash in this table.
    #[inline]
    pub fn placement(&self, hash: u64) -> Placement {
        placement(hash, self.buckets.len())
    }

    /// Starts loading the metadata line of a key's first bucket (batch phase 1).
    #[inline]
    pub fn prefetch_bucket(&self, p: &Placement) {
        if let Some(b) = self.buckets.get(p.b1) {
            crate::arch::prefetch(b);
        }
    }

    /// Starts loading the entries whose tag matches in the key's first bucket (batch
    /// phase 2, after [`FlowTable::prefetch_bucket`] brought the tags in).
    #[inline]
    pub fn prefetch_entry(&self, p: &Placement) {
        let Some(b) = self.buckets.get(p.b1) else {
            return;
        };
        let mut m = match_tags(&b.tags, p.tag);
        while m != 0 {
            let way = m.trailing_zeros() as usize;
            if let Some(e) = self.entries.get(p.b1 * WAYS + way) {
                crate::arch::prefetch(e);
                crate::arch::prefetch(&e.bytes);
            }
            m &= m - 1;
        }
    }

    #[inline]
    fn find_in(&self, bucket: usize, tag: u16, k: &ConnKey) -> Option<Slot> {
        let b = self.buckets.get(bucket)?;
        let mut m = match_tags(&b.tags, tag);
        while m != 0 {
            let way = m.trailing_zeros() as usize;
            let slot = bucket * WAYS + way;
            if self.entries.get(slot).is_some_and(|e| e.key_eq(k)) {
                return Some(slot as Slot);
            }
            m &= m - 1;
        }
        None
    }

    /// Finds a connection; counts a hit or a miss. Does not look at expiry (the
    /// caller decides what an expired hit means) and does not touch the LRU stamp.
    #[inline]
    pub fn lookup(&mut self, k: &ConnKey, hash: u64) -> Option<Slot> {
        let p = self.placement(hash);
        self.lookup_placed(k, &p)
    }

    /// [`FlowTable::lookup`] with the placement already computed.
    #[inline]
    pub fn lookup_placed(&mut self, k: &ConnKey, p: &Placement) -> Option<Slot> {
        let r = self
            .find_in(p.b1, p.tag, k)
            .or_else(|| self.find_in(p.b2, p.tag, k));
        if r.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        r
    }

    /// Like [`FlowTable::lookup`] but without counting (for related-packet lookups).
    #[inline]
    pub fn find(&self, k: &ConnKey, hash: u64) -> Option<Slot> {
        let p = self.placement(hash);
        self.find_in(p.b1, p.tag, k)
            .or_else(|| self.find_in(p.b2, p.tag, k))
    }

    /// Marks a slot as used at `now` (the LRU stamp).
    #[inline]
    pub fn touch(&mut self, slot: Slot, now: u64) {
        let s = slot as usize;
        if let Some(b) = self.buckets.get_mut(s / WAYS) {
            b.stamps[s % WAYS] = stamp(now);
        }
    }

    /// The entry in a slot.
    #[inline]
    pub fn entry(&self, slot: Slot) -> Option<&FlowEntry> {
        self.entries.get(slot as usize)
    }

    /// The entry in a slot, mutably.
    #[inline]
    pub fn entry_mut(&mut self, slot: Slot) -> Option<&mut FlowEntry> {
        self.entries.get_mut(slot as usize)
    }

    /// Claims a slot for a key with `hash` (the key must not be present) at `now`. When both buckets
    /// are full, the least recently used candidate not awaiting a verdict is evicted
    /// and its final record passed to `on_end`. Returns `None` only when every
    /// candidate is awaiting its verdict (counted as an insert failure). The caller
    /// then fills the entry with [`FlowEntry::start`].
    pub fn claim(
        &mut self,
        hash: u64,
        now: u64,
        on_end: &mut impl FnMut(FlowRecord),
    ) -> Option<Slot> {
        let p = self.placement(hash);
        self.claim_placed(&p, now, on_end)
    }

    /// [`FlowTable::claim`] with the placement already computed.
    pub fn claim_placed(
        &mut self,
        p: &Placement,
        now: u64,
        on_end: &mut impl FnMut(FlowRecord),
    ) -> Option<Slot> {
        let free = |b: &Bucket| {
            let m = match_tags(&b.tags, 0);
            (m != 0).then(|| m.trailing_zeros() as usize)
        };
        let slot = if let Some(w) = self.buckets.get(p.b1).and_then(free) {
            p.b1 * WAYS + w
        } else if let Some(w) = self.buckets.get(p.b2).and_then(free) {
            p.b2 * WAYS + w
        } else {
            let now_stamp = stamp(now);
            let mut best: Option<(u32, usize)> = None;
            for b in [p.b1, p.b2] {
                let Some(bucket) = self.buckets.get(b) else {
                    continue;
                };
                for w in 0..WAYS {
                    let slot = b * WAYS + w;
                    if self.entries.get(slot).is_none_or(|e| e.awaiting_verdict()) {
                        continue;
                    }
                    let age = now_stamp.wrapping_sub(bucket.stamps[w]);
                    if best.is_none_or(|(a, _)| age > a) {
                        best = Some((age, slot));
                    }
                }
            }
            let Some((_, victim)) = best else {
                self.stats.insert_failures += 1;
                return None;
            };
            if let Some(e) = self.entries.get(victim) {
                let reason = if e.is_expired(now, &self.timeouts) {
                    self.stats.expired += 1;
                    if e.state.is_closed() {
                        EndReason::Closed
                    } else {
                        EndReason::Timeout
                    }
                } else {
                    self.stats.evictions += 1;
                    EndReason::Evicted
                };
                on_end(e.record(Some(reason)));
            }
            self.len -= 1;
            victim
        };
        if let Some(b) = self.buckets.get_mut(slot / WAYS) {
            b.tags[slot % WAYS] = p.tag;
            b.stamps[slot % WAYS] = stamp(now);
        }
        self.len += 1;
        self.stats.inserts += 1;
        Some(slot as Slot)
    }

    /// Removes the entry in `slot`, if any.
    pub fn remove(&mut self, slot: Slot) {
        let s = slot as usize;
        if let Some(b) = self.buckets.get_mut(s / WAYS)
            && b.tags[s % WAYS] != 0
        {
            b.tags[s % WAYS] = 0;
            self.len -= 1;
        }
    }

    fn is_used(&self, slot: usize) -> bool {
        self.buckets
            .get(slot / WAYS)
            .is_some_and(|b| b.tags[slot % WAYS] != 0)
    }

    /// Retires expired entries in the next `buckets` buckets (round robin), passing
    /// their final records to `on_end`. Call once per batch to keep the table clean
    /// at a bounded cost.
    pub fn sweep(&mut self, now: u64, buckets: usize, on_end: &mut impl FnMut(FlowRecord)) {
        let n = self.buckets.len();
        for _ in 0..buckets.min(n) {
            let b = self.sweep_cursor;
            self.sweep_cursor = (b + 1) % n;
            for w in 0..WAYS {
                let slot = b * WAYS + w;
                if !self.is_used(slot) {
                    continue;
                }
                let Some(e) = self.entries.get(slot) else {
                    continue;
                };
                if !e.awaiting_verdict() && e.is_expired(now, &self.timeouts) {
                    let reason = if e.state.is_closed() {
                        EndReason::Closed
                    } else {
                        EndReason::Timeout
                    };
                    on_end(e.record(Some(reason)));
                    self.stats.expired += 1;
                    self.remove(slot as Slot);
                }
            }
        }
    }

    /// Ends an interval: every active entry's record goes to `on_record` (expired
    /// entries as final records, which frees them) and interval counters restart.
    pub fn export_interval(&mut self, now: u64, on_record: &mut impl FnMut(FlowRecord)) {
        for slot in 0..self.entries.len() {
            if !self.is_used(slot) {
                continue;
            }
            let timeouts = self.timeouts;
            let Some(e) = self.entries.get_mut(slot) else {
                continue;
            };
            if e.awaiting_verdict() {
                continue;
            }
            if e.is_expired(now, &timeouts) {
                let reason = if e.state.is_closed() {
                    EndReason::Closed
                } else {
                    EndReason::Timeout
                };
                on_record(e.record(Some(reason)));
                self.stats.expired += 1;
                self.remove(slot as Slot);
            } else if e.is_active() {
                on_record(e.record(None));
                e.reset_interval();
            }
        }
    }

    /// Ends every tracked connection (end of a replay): each gets a final record
    /// with [`EndReason::Drained`] (or `Closed`/`Timeout` if already over) and the
    /// table is emptied.
    pub fn drain(&mut self, now: u64, on_end: &mut impl FnMut(FlowRecord)) {
        for slot in 0..self.entries.len() {
            if !self.is_used(slot) {
                continue;
            }
            if let Some(e) = self.entries.get(slot)
                && !e.awaiting_verdict()
            {
                let reason = if e.is_expired(now, &self.timeouts) {
                    if e.state.is_closed() {
                        EndReason::Closed
                    } else {
                        EndReason::Timeout
                    }
                } else {
                    EndReason::Drained
                };
                on_end(e.record(Some(reason)));
            }
            self.remove(slot as Slot);
        }
    }

    /// Records of every tracked connection without changing anything (snapshot).
    pub fn snapshot(&self) -> impl Iterator<Item = FlowRecord> + '_ {
        (0..self.entries.len())
            .filter(|&s| self.is_used(s))
            .filter_map(|s| self.entries.get(s))
            .filter(|e| !e.awaiting_verdict())
            .map(|e| e.record(None))
    }

    /// The slots currently in use and their keys, in slot order (for tests).
    pub fn keys(&self) -> impl Iterator<Item = (Slot, ConnKey)> + '_ {
        (0..self.entries.len())
            .filter(|&s| self.is_used(s))
            .filter_map(|s| self.entries.get(s).map(|e| (s as Slot, e.key())))
    }
}

pub mod model {
    //! The slow, obviously-correct twin of [`FlowTable`](super::FlowTable)'s
    //! placement and eviction: a vector of buckets holding `(key, last_seen,
    //! awaiting)` in plain slots, no tags, no packing, no metadata lines.

    use super::{ConnKey, KeyHasher, WAYS, placement, stamp};

    /// One occupied slot of the model.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ModelSlot {
        /// The key held.
        pub key: ConnKey,
        /// Last time it was used (ns).
        pub last_ns: u64,
        /// Inserted in the current batch, no verdict yet.
        pub awaiting: bool,
    }

    /// The model table.
    #[derive(Clone, Debug)]
    pub struct ModelTable {
        /// `buckets[b][w]`.
        pub buckets: Vec<[Option<ModelSlot>; WAYS]>,
        hasher: KeyHasher,
    }

    impl ModelTable {
        /// A model of a table with `capacity` and `seed` (same rounding as the table).
        pub fn new(capacity: usize, seed: u64) -> Self {
            let n = capacity.max(1).div_ceil(WAYS);
            ModelTable {
                buckets: vec![[None; WAYS]; n],
                hasher: KeyHasher::new(seed),
            }
        }

        fn candidates(&self, k: &ConnKey) -> [usize; 2] {
            let p = placement(self.hasher.hash(k), self.buckets.len());
            [p.b1, p.b2]
        }

        /// The slot (bucket * WAYS + way) holding `k`.
        pub fn lookup(&self, k: &ConnKey) -> Option<usize> {
            for b in self.candidates(k) {
                for w in 0..WAYS {
                    if self.buckets[b][w].is_some_and(|s| s.key == *k) {
                        return Some(b * WAYS + w);
                    }
                }
            }
            None
        }

        /// Marks `k` used at `now`.
        pub fn touch(&mut self, k: &ConnKey, now: u64) {
            if let Some(s) = self.lookup(k)
                && let Some(slot) = self.buckets[s / WAYS][s % WAYS].as_mut()
            {
                slot.last_ns = now;
            }
        }

        /// Marks `k`'s verdict as known.
        pub fn settle(&mut self, k: &ConnKey) {
            if let Some(s) = self.lookup(k)
                && let Some(slot) = self.buckets[s / WAYS][s % WAYS].as_mut()
            {
                slot.awaiting = false;
            }
        }

        /// Inserts `k` (absent) at `now`: the first free way of the first bucket, else
        /// of the second, else replaces the candidate idle the longest (ages measured in
        /// the table's coarse stamps; the earliest in bucket order wins ties) that is not
        /// awaiting a verdict. Returns (slot, evicted key).
        pub fn insert(&mut self, k: ConnKey, now: u64) -> Option<(usize, Option<ConnKey>)> {
            let new = ModelSlot {
                key: k,
                last_ns: now,
                awaiting: true,
            };
            for b in self.candidates(&k) {
                for w in 0..WAYS {
                    if self.buckets[b][w].is_none() {
                        self.buckets[b][w] = Some(new);
                        return Some((b * WAYS + w, None));
                    }
                }
            }
            let mut best: Option<(u32, usize)> = None;
            for b in self.candidates(&k) {
                for w in 0..WAYS {
                    if let Some(s) = self.buckets[b][w]
                        && !s.awaiting
                    {
                        let age = stamp(now).wrapping_sub(stamp(s.last_ns));
                        if best.is_none_or(|(a, _)| age > a) {
                            best = Some((age, b * WAYS + w));
                        }
                    }
                }
            }
            let (_, victim) = best?;
            let old = self.buckets[victim / WAYS][victim % WAYS].replace(new);
            Some((victim, old.map(|s| s.key)))
        }

        /// Removes `k`.
        pub fn remove(&mut self, k: &ConnKey) {
            if let Some(s) = self.lookup(k) {
                self.buckets[s / WAYS][s % WAYS] = None;
            }
        }

        /// Number of keys held.
        pub fn len(&self) -> usize {
            self.buckets.iter().flatten().flatten().count()
        }

        /// Whether no key is held.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::model::ModelTable;
    use super::*;
    use crate::packet::{ConnClass, ConnTuple};
    use crate::program::proto;
    use proptest::prelude::*;

    fn tuple(src: u128, dst: u128, sport: u16, dport: u16, p: u8, class: ConnClass) -> ConnTuple {
        ConnTuple {
            src,
            dst,
            sport,
            dport,
            proto: p,
            family: Family::V4,
            class,
        }
    }

    #[test]
    fn entry_is_two_cache_lines() {
        assert_eq!(std::mem::size_of::<FlowEntry>(), 128);
        assert_eq!(std::mem::align_of::<FlowEntry>(), 64);
        let t = FlowTable::new(FlowTableConfig {
            capacity: 1000,
            ..Default::default()
        });
        assert_eq!(t.capacity(), 1000);
        assert_eq!(t.memory_bytes(), 1000 * 128 + 125 * 64);
    }

    #[test]
    fn both_directions_share_a_key() {
        let fwd = tuple(1, 2, 40000, 80, proto::TCP, ConnClass::Ports);
        let rev = tuple(2, 1, 80, 40000, proto::TCP, ConnClass::Ports);
        let (kf, df) = ConnKey::canonical(&fwd);
        let (kr, dr) = ConnKey::canonical(&rev);
        assert_eq!(kf, kr);
        assert_eq!(df, dr.flip());
        // Same addresses, swapped ports only: still one connection.
        let s1 = tuple(5, 5, 1, 2, proto::UDP, ConnClass::Ports);
        let s2 = tuple(5, 5, 2, 1, proto::UDP, ConnClass::Ports);
        assert_eq!(ConnKey::canonical(&s1).0, ConnKey::canonical(&s2).0);
        assert_ne!(ConnKey::canonical(&s1).1, ConnKey::canonical(&s2).1);
        // ICMP echo: request and reply share id and request type.
        let req = tuple(9, 3, 77, 8, proto::ICMP, ConnClass::Query { reply: false });
        let rep = tuple(3, 9, 77, 8, proto::ICMP, ConnClass::Query { reply: true });
        let (kq, dq) = ConnKey::canonical(&req);
        let (kp, dp) = ConnKey::canonical(&rep);
        assert_eq!(kq, kp);
        assert_eq!(dq, dp.flip());
        // One-way ICMP is never paired with its mirror.
        let o1 = tuple(1, 2, 3, 1, proto::ICMP, ConnClass::OneWay);
        let o2 = tuple(2, 1, 3, 1, proto::ICMP, ConnClass::OneWay);
        assert_ne!(ConnKey::canonical(&o1).0, ConnKey::canonical(&o2).0);
    }

    fn key(i: u32) -> ConnKey {
        ConnKey::canonical(&tuple(
            u128::from(i),
            0xffff_0000 + u128::from(i % 7),
            (i % 50_000) as u16,
            443,
            proto::TCP,
            ConnClass::Ports,
        ))
        .0
    }

    fn fk(k: &ConnKey) -> FlowKey {
        FlowKey {
            src: k.a,
            dst: k.b,
            sport: k.pa(),
            dport: k.pb(),
            proto: k.proto(),
            family: k.family(),
            ifindex: 0,
        }
    }

    fn insert(t: &mut FlowTable, k: &ConnKey, now: u64, ended: &mut Vec<FlowRecord>) -> Slot {
        let h = t.hash(k);
        let s = t.claim(h, now, &mut |r| ended.push(r)).expect("slot");
        let e = t.entry_mut(s).expect("entry");
        e.start(k, Dir::AtoB, &fk(k), tcp_flags::SYN, now);
        e.set_verdicts(&FlowVerdicts::default(), 1, true);
        s
    }

    #[test]
    fn tcp_state_machine() {
        let k = key(1);
        let mut e = FlowEntry::EMPTY;
        e.start(&k, Dir::AtoB, &fk(&k), tcp_flags::SYN, 0);
        e.set_verdicts(&FlowVerdicts::default(), 1, true);
        assert_eq!(e.state(), ConnState::SynSent);
        use tcp_flags::*;
        e.on_packet(Dir::AtoB, SYN, 60, 0);
        e.on_packet(Dir::BtoA, ACK, 60, 1); // stray ACK: no SYN-ACK yet
        assert_eq!(e.state(), ConnState::SynSent);
        e.on_packet(Dir::BtoA, SYN | ACK, 60, 2);
        assert_eq!(e.state(), ConnState::SynReceived);
        e.on_packet(Dir::AtoB, ACK, 60, 3);
        assert_eq!(e.state(), ConnState::Established);
        let t = Timeouts::default();
        assert_eq!(e.timeout(&t), t.tcp_established);
        e.on_packet(Dir::BtoA, FIN | ACK, 60, 4);
        assert_eq!(e.state(), ConnState::FinWait);
        assert!(!e.is_reopen(SYN));
        e.on_packet(Dir::AtoB, FIN | ACK, 60, 5);
        assert_eq!(e.state(), ConnState::FinsSeen);
        assert_eq!(e.timeout(&t), t.tcp_fins_seen);
        assert!(e.is_reopen(SYN));
        assert!(!e.is_reopen(SYN | ACK));
        let r = e.record(None);
        assert_eq!((r.packets_fwd, r.packets_rev), (3, 3));
        assert_eq!((r.bytes_fwd, r.bytes_rev), (180, 180));

        let mut m = FlowEntry::EMPTY;
        m.start(&k, Dir::BtoA, &fk(&k), ACK, 0);
        assert_eq!(m.state(), ConnState::Established, "mid-stream pickup");
        m.on_packet(Dir::AtoB, RST, 40, 1);
        assert_eq!(m.state(), ConnState::Reset);
        assert_eq!(m.timeout(&t), t.tcp_reset);
        assert!(m.is_expired(1 + t.tcp_reset + 1, &t));
        assert!(!m.is_expired(1 + t.tcp_reset, &t));
    }

    #[test]
    fn verdicts_round_trip_through_the_packed_entry() {
        let d = |v, t| Decision {
            verdict: v,
            trace: TraceId(t),
        };
        let fv = FlowVerdicts {
            egress: Some((
                EndpointId(7),
                Verdicts {
                    enforced: d(Verdict::Allow, 11),
                    pending: d(Verdict::Deny, 12),
                },
            )),
            ingress: None,
        };
        let mut e = FlowEntry::EMPTY;
        e.set_verdicts(&fv, 5, true);
        assert_eq!(e.verdicts(), fv);
        assert_eq!(
            (e.applied(), e.pending(), e.generation()),
            (Verdict::Allow, Verdict::Deny, 5)
        );
        // A new generation denies; the connection keeps its applied allow.
        let deny = FlowVerdicts {
            egress: Some((
                EndpointId(7),
                Verdicts {
                    enforced: d(Verdict::Deny, 1),
                    pending: d(Verdict::Allow, 2),
                },
            )),
            ingress: None,
        };
        e.set_verdicts(&deny, 6, false);
        assert_eq!(e.applied(), Verdict::Allow);
        assert_eq!(e.pending(), Verdict::Allow);
        assert_eq!(e.record(None).applied_generation, 5);
        e.set_verdicts(&deny, 7, true);
        assert_eq!(e.applied(), Verdict::Deny);
    }

    #[test]
    fn key_parts_round_trip_through_the_tail() {
        for (family, class) in [
            (Family::V4, KeyClass::Ports),
            (Family::V6, KeyClass::Query),
            (Family::V4, KeyClass::OneWay),
            (Family::V6, KeyClass::Generic),
        ] {
            let k = ConnKey::new(u128::MAX, 0xfffe, 7, 1, 0xff, family, class);
            assert_eq!((k.a, k.b), (u128::MAX, 7));
            assert_eq!((k.pa(), k.pb(), k.proto()), (0xfffe, 1, 0xff));
            assert_eq!((k.family(), k.class()), (family, class));
            assert_eq!(k.tail() >> 56, 0);
        }
    }

    #[test]
    fn hash_depends_on_the_seed_and_on_every_part_of_the_key() {
        let k = ConnKey::new(
            0x0a01_0203,
            40000,
            0x0a02_0001,
            80,
            6,
            Family::V4,
            KeyClass::Ports,
        );
        let h = KeyHasher::new(1);
        assert_eq!(h.hash(&k), KeyHasher::new(1).hash(&k));
        assert_ne!(h.hash(&k), KeyHasher::new(2).hash(&k));
        let variants = [
            ConnKey::new(
                0x0a01_0204,
                40000,
                0x0a02_0001,
                80,
                6,
                Family::V4,
                KeyClass::Ports,
            ),
            ConnKey::new(
                0x0a01_0203,
                40001,
                0x0a02_0001,
                80,
                6,
                Family::V4,
                KeyClass::Ports,
            ),
            ConnKey::new(
                0x0a01_0203,
                40000,
                0x0a02_0101,
                80,
                6,
                Family::V4,
                KeyClass::Ports,
            ),
            ConnKey::new(
                0x0a01_0203,
                40000,
                0x0a02_0001,
                81,
                6,
                Family::V4,
                KeyClass::Ports,
            ),
            ConnKey::new(
                0x0a01_0203,
                40000,
                0x0a02_0001,
                80,
                17,
                Family::V4,
                KeyClass::Ports,
            ),
            ConnKey::new(
                0x0a01_0203,
                40000,
                0x0a02_0001,
                80,
                6,
                Family::V6,
                KeyClass::Ports,
            ),
            ConnKey::new(
                0x0a01_0203,
                40000,
                0x0a02_0001,
                80,
                6,
                Family::V4,
                KeyClass::Generic,
            ),
            ConnKey::new(
                1 << 100 | 0x0a01_0203,
                40000,
                0x0a02_0001,
                80,
                6,
                Family::V4,
                KeyClass::Ports,
            ),
            ConnKey::new(
                0x0a01_0203,
                40000,
                1 << 70 | 0x0a02_0001,
                80,
                6,
                Family::V4,
                KeyClass::Ports,
            ),
            // The same bits flipped in an address and in a port.
            ConnKey::new(
                0x0a01_0203 ^ 1,
                40000 ^ 1,
                0x0a02_0001,
                80,
                6,
                Family::V4,
                KeyClass::Ports,
            ),
            ConnKey::new(
                0x0a01_0203,
                40000,
                0x0a02_0001 ^ 1,
                80 ^ 1,
                6,
                Family::V4,
                KeyClass::Ports,
            ),
        ];
        for v in variants {
            assert_ne!(h.hash(&k), h.hash(&v), "{v:?}");
        }
    }

    /// Sequential client ports and addresses (what a scan or a NAT pool produces)
    /// spread over the buckets about as evenly as random placement would: with
    /// 65,536 keys in 4,096 buckets (16 on average) no bucket gets more than 40 and
    /// the first and second choices differ for almost every key.
    #[test]
    fn sequential_keys_spread_over_buckets() {
        for seed in [0u64, 1, 0x7469_6572_6761_7465] {
            let h = KeyHasher::new(seed);
            let n = 4096;
            let mut load = vec![0u32; n];
            let mut same = 0;
            for i in 0..65_536u32 {
                let k = ConnKey::new(
                    u128::from(0x0a01_0000 + (i >> 8)),
                    1024 + (i & 0xff) as u16,
                    0x0a02_0001,
                    443,
                    6,
                    Family::V4,
                    KeyClass::Ports,
                );
                let p = placement(h.hash(&k), n);
                load[p.b1] += 1;
                same += u32::from(p.b1 == p.b2);
            }
            let max = load.iter().copied().max().unwrap_or(0);
            assert!(max <= 40, "seed {seed}: fullest bucket {max}");
            assert!(same < 64, "seed {seed}: {same} keys with b1 == b2");
        }
    }

    #[test]
    fn pending_bit_matches_the_unpacked_verdicts() {
        let d = |allow: bool| Decision {
            verdict: if allow { Verdict::Allow } else { Verdict::Deny },
            trace: TraceId(0),
        };
        for bits in 0u8..64 {
            let view = |present: u8, enf: u8, pend: u8| {
                (bits & present != 0).then(|| {
                    (
                        EndpointId(1),
                        Verdicts {
                            enforced: d(bits & enf != 0),
                            pending: d(bits & pend != 0),
                        },
                    )
                })
            };
            let fv = FlowVerdicts {
                egress: view(1, 2, 4),
                ingress: view(8, 16, 32),
            };
            let mut e = FlowEntry::EMPTY;
            e.set_verdicts(&fv, 1, true);
            assert_eq!(e.pending(), fv.pending(), "{fv:?}");
            assert_eq!(e.applied(), fv.enforced(), "{fv:?}");
            assert_eq!(e.verdicts(), fv);
        }
    }

    /// [`FlowEntry::on_packet`] as first written: the state machine runs for every
    /// packet of a TCP connection.
    fn on_packet_reference(e: &mut FlowEntry, dir: Dir, flags: u8, len: u32, now: u64) {
        let side = usize::from(dir == Dir::BtoA);
        if e.flags & F_ACTIVE == 0 {
            e.flags |= F_ACTIVE;
            e.interval_first_ns = now;
        }
        e.packets[side] = e.packets[side].saturating_add(1);
        e.bytes[side] = e.bytes[side].saturating_add(u64::from(len));
        e.last_ns = e.last_ns.max(now);
        if e.state != ConnState::Open {
            e.tcp_transition(dir, flags);
        }
        e.tclass = timeout_class(e.state, e.key().proto());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// The hit path's shortcuts are exact: skipping the state machine for
        /// ordinary segments leaves the entry exactly as running it would, and the
        /// expiry check by timeout class agrees with the per-state reference at and
        /// around every timeout boundary.
        #[test]
        fn conntrack_shortcuts_equal_the_reference(
            proto_pick in 0usize..5,
            first in any::<u8>(),
            steps in proptest::collection::vec((any::<bool>(), any::<u8>(), 0u64..100_000_000_000), 0..24),
        ) {
            let p = [proto::TCP, proto::UDP, proto::ICMP, proto::ICMPV6, proto::SCTP][proto_pick];
            let class = if p == proto::TCP || p == proto::UDP || p == proto::SCTP {
                ConnClass::Ports
            } else {
                ConnClass::OneWay
            };
            let (k, dir) = ConnKey::canonical(&tuple(1, 2, 1000, 80, p, class));
            let t = Timeouts::default();
            let table = TimeoutTable::from(&t);
            let mut e = FlowEntry::EMPTY;
            e.start(&k, dir, &fk(&k), first, 0);
            let mut now = 0;
            for (b_to_a, flags, dt) in steps {
                now += dt;
                let d = if b_to_a { Dir::BtoA } else { Dir::AtoB };
                let flags = if p == proto::TCP { flags } else { 0 };
                let mut reference = e;
                e.on_packet(d, flags, 60, now);
                on_packet_reference(&mut reference, d, flags, 60, now);
                prop_assert_eq!(e, reference);
                prop_assert_eq!(e.tclass, timeout_class(e.state, p));
                for probe in [0, 1, t.icmp, t.tcp_syn, t.udp, t.tcp_fins_seen, t.tcp_reset, t.generic, t.tcp_established] {
                    for at in [probe.saturating_sub(1), probe, probe + 1] {
                        prop_assert_eq!(e.is_expired_by(now + at, &table), e.is_expired(now + at, &t));
                    }
                }
            }
        }
    }

    #[test]
    fn initiator_key_is_reconstructed() {
        let fwd = FlowKey {
            src: 20,
            dst: 10,
            sport: 5555,
            dport: 53,
            proto: proto::UDP,
            family: Family::V4,
            ifindex: 4,
        };
        let t = tuple(20, 10, 5555, 53, proto::UDP, ConnClass::Ports);
        let (k, dir) = ConnKey::canonical(&t);
        assert_eq!(dir, Dir::BtoA);
        let mut e = FlowEntry::EMPTY;
        e.start(&k, dir, &fwd, 0, 0);
        assert_eq!(e.initiator_key(), fwd);
        // ICMP echo: the initiator's type/code come back, not the key's ports.
        let echo = FlowKey {
            src: 1,
            dst: 2,
            sport: 8,
            dport: 0,
            proto: proto::ICMP,
            family: Family::V4,
            ifindex: 0,
        };
        let (k, dir) = ConnKey::canonical(&tuple(
            1,
            2,
            99,
            8,
            proto::ICMP,
            ConnClass::Query { reply: false },
        ));
        e.start(&k, dir, &echo, 0, 0);
        assert_eq!(e.initiator_key(), echo);
    }

    #[test]
    fn full_table_evicts_the_idlest_and_counts_it() {
        let mut t = FlowTable::new(FlowTableConfig {
            capacity: 16,
            ..Default::default()
        });
        let mut ended = Vec::new();
        let mut now = 0;
        for i in 0..2000u32 {
            now += 1 << 20; // one stamp unit per insert
            let k = key(i);
            if t.lookup(&k, t.hash(&k)).is_none() {
                insert(&mut t, &k, now, &mut ended);
            }
            assert!(t.len() <= 16);
        }
        assert_eq!(t.len(), 16);
        let s = t.stats();
        assert_eq!(s.inserts, 2000);
        assert_eq!(s.evictions, 2000 - 16);
        assert_eq!(ended.len(), 2000 - 16);
        assert!(ended.iter().all(|r| r.end == Some(EndReason::Evicted)));
    }

    #[test]
    fn sweep_and_export() {
        let mut t = FlowTable::new(FlowTableConfig {
            capacity: 64,
            ..Default::default()
        });
        let mut ended = Vec::new();
        for i in 0..10 {
            let s = insert(&mut t, &key(i), 0, &mut ended);
            t.entry_mut(s)
                .expect("e")
                .on_packet(Dir::AtoB, tcp_flags::SYN, 60, 0);
        }
        let mut recs = Vec::new();
        t.export_interval(SEC, &mut |r| recs.push(r));
        assert_eq!(recs.len(), 10);
        assert!(
            recs.iter()
                .all(|r| r.started && r.end.is_none() && r.packets_fwd == 1)
        );
        recs.clear();
        t.export_interval(2 * SEC, &mut |r| recs.push(r));
        assert!(recs.is_empty(), "nothing happened in the second interval");
        // SYN-sent times out after 20 s.
        t.sweep(25 * SEC, usize::MAX, &mut |r| ended.push(r));
        assert_eq!(t.len(), 0);
        assert_eq!(ended.len(), 10);
        assert!(ended.iter().all(|r| r.end == Some(EndReason::Timeout)));
        assert_eq!(t.stats().expired, 10);
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Look up key i; insert it at time t if absent; settle its verdict unless `hold`.
        Upsert { i: u16, dt: u16, hold: bool },
        /// Settle every awaiting key (end of batch).
        EndBatch,
        /// Remove key i.
        Remove { i: u16 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u16..300, 0u16..5000, proptest::bool::weighted(0.1))
                .prop_map(|(i, dt, hold)| Op::Upsert { i, dt, hold }),
            1 => Just(Op::EndBatch),
            1 => (0u16..300).prop_map(|i| Op::Remove { i }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The table and its model agree on every lookup, on where each insert lands,
        /// and on which key each eviction removes.
        #[test]
        fn table_agrees_with_model(
            cap in 1usize..80,
            seed in any::<u64>(),
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let mut t = FlowTable::new(FlowTableConfig { capacity: cap, seed, ..Default::default() });
            let mut m = ModelTable::new(cap, seed);
            let mut now = 0u64;
            let mut awaiting: Vec<(Slot, ConnKey)> = Vec::new();
            for o in ops {
                match o {
                    Op::Upsert { i, dt, hold } => {
                        now += u64::from(dt) << 16;
                        let k = key(u32::from(i));
                        let h = t.hash(&k);
                        let got = t.lookup(&k, h);
                        prop_assert_eq!(got.map(|s| s as usize), m.lookup(&k));
                        if let Some(s) = got {
                            t.touch(s, now);
                            m.touch(&k, now);
                        } else {
                            let mut ended = Vec::new();
                            let s = t.claim(h, now, &mut |r| ended.push(r));
                            let ms = m.insert(k, now);
                            prop_assert_eq!(s.map(|s| s as usize), ms.map(|x| x.0));
                            let evicted: Vec<ConnKey> = ended.iter().map(|r| {
                                ConnKey::canonical(&ConnTuple {
                                    src: r.key.src, dst: r.key.dst, sport: r.key.sport,
                                    dport: r.key.dport, proto: r.key.proto,
                                    family: r.key.family, class: ConnClass::Ports,
                                }).0
                            }).collect();
                            prop_assert_eq!(evicted.first().copied(), ms.and_then(|x| x.1));
                            if let Some(s) = s {
                                let e = t.entry_mut(s).expect("entry");
                                e.start(&k, Dir::AtoB, &fk(&k), tcp_flags::SYN, now);
                                if hold {
                                    awaiting.push((s, k));
                                } else {
                                    e.set_verdicts(&FlowVerdicts::default(), 1, true);
                                    m.settle(&k);
                                }
                            }
                        }
                        prop_assert_eq!(t.len(), m.len());
                    }
                    Op::EndBatch => {
                        for (s, k) in awaiting.drain(..) {
                            if let Some(e) = t.entry_mut(s) && e.key() == k {
                                e.set_verdicts(&FlowVerdicts::default(), 1, true);
                            }
                            m.settle(&k);
                        }
                    }
                    Op::Remove { i } => {
                        let k = key(u32::from(i));
                        if let Some(s) = t.find(&k, t.hash(&k)) {
                            t.remove(s);
                            awaiting.retain(|&(_, a)| a != k);
                        }
                        m.remove(&k);
                        prop_assert_eq!(t.len(), m.len());
                    }
                }
            }
            let mut tk: Vec<(usize, ConnKey)> = t.keys().map(|(s, k)| (s as usize, k)).collect();
            tk.sort_by_key(|x| x.0);
            let mk: Vec<(usize, ConnKey)> = m.buckets.iter().enumerate().flat_map(|(b, ws)| {
                ws.iter().enumerate().filter_map(move |(w, s)| s.map(|s| (b * WAYS + w, s.key)))
            }).collect();
            prop_assert_eq!(tk, mk);
        }
    }
}
