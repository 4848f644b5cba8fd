//! One tracked connection ([`FlowEntry`], two cache lines) and the records it hands
//! out ([`FlowRecord`], [`EndReason`]).

use super::conntrack::{ConnState, timeout_class};
use super::key::{ConnKey, Dir, KeyClass};
use crate::packet::tcp_flags;
use crate::program::{Decision, EndpointId, FlowKey, FlowVerdicts, TraceId, Verdict, Verdicts};

// Entry flag bits.
pub(super) const F_INIT_B: u8 = 1 << 0; // the initiator is side b
pub(super) const F_ACTIVE: u8 = 1 << 1; // packets since the last interval export
pub(super) const F_STARTED: u8 = 1 << 2; // created since the last interval export
pub(super) const F_FIN_A: u8 = 1 << 3;
pub(super) const F_FIN_B: u8 = 1 << 4;
pub(super) const F_AWAITING: u8 = 1 << 5; // inserted in this batch, verdict not yet known
pub(super) const F_APPLIED_ALLOW: u8 = 1 << 6; // the enforced verdict being applied is allow
pub(super) const F_OFFLOADED: u8 = 1 << 7; // installed in a flow offload (counters partly outside)

// Verdict bits (packed FlowVerdicts).
pub(super) const V_EGRESS: u8 = 1 << 0;
pub(super) const V_INGRESS: u8 = 1 << 1;
pub(super) const V_E_ENF: u8 = 1 << 2;
pub(super) const V_E_PEND: u8 = 1 << 3;
pub(super) const V_I_ENF: u8 = 1 << 4;
pub(super) const V_I_PEND: u8 = 1 << 5;
pub(super) const V_PEND_DENY: u8 = 1 << 6; // derived: some present view's pending verdict is deny

/// One tracked connection: 128 bytes, 64-byte aligned (two cache lines). The first
/// line holds what every hit reads (key, state, flags, generation, last seen, packet
/// counters); the second the byte counters, times, the interface and the packed
/// verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct FlowEntry {
    pub(super) a: u128,
    pub(super) b: u128,
    /// [`ConnKey::tail`].
    pub(super) tail: u64,
    pub(super) generation: u32,
    pub(super) state: ConnState,
    pub(super) flags: u8,
    pub(super) vbits: u8,
    /// [`timeout_class`] of `state` and the protocol, kept with every state change
    /// so a hit checks expiry with one table load instead of branching on the state.
    pub(super) tclass: u8,
    pub(super) last_ns: u64,
    /// Packets this interval, [from a, from b].
    pub(super) packets: [u32; 2],
    // ---- second cache line
    /// Bytes this interval, [from a, from b].
    pub(super) bytes: [u64; 2],
    pub(super) first_ns: u64,
    pub(super) interval_first_ns: u64,
    pub(super) applied_generation: u32,
    /// Initiator's ICMP type (high byte) and code (low byte), for re-classification.
    pub(super) icmp_type_code: u16,
    /// Interface of the connection's first packet (part of the initiator's key).
    pub(super) ifindex: u16,
    /// Packed verdicts: egress (endpoint, enforced trace, pending trace), then ingress.
    pub(super) ids: [u32; 6],
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
    pub(super) const EMPTY: FlowEntry = FlowEntry {
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
    pub(super) fn key_eq(&self, k: &ConnKey) -> bool {
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

    /// Whether the connection is marked as installed in a flow offload: part of its
    /// packets are counted outside the entry until merged with
    /// [`FlowEntry::add_offloaded`]. [`FlowEntry::start`] clears the mark.
    #[inline]
    pub fn is_offloaded(&self) -> bool {
        self.flags & F_OFFLOADED != 0
    }

    /// Sets or clears the offload mark (see [`FlowEntry::is_offloaded`]).
    #[inline]
    pub fn set_offloaded(&mut self, on: bool) {
        if on {
            self.flags |= F_OFFLOADED;
        } else {
            self.flags &= !F_OFFLOADED;
        }
    }

    /// Accounts `packets` packets of `bytes` bytes in `dir` that a flow offload
    /// forwarded, the latest at `last_ns`, none before `since_ns` (when they start
    /// the interval, `since_ns` is taken as the interval's first packet: the offload
    /// keeps no first time). The same as [`FlowEntry::on_packet`] for each of them,
    /// which is exact for what an offload forwards (TCP without SYN, FIN or RST in an
    /// established connection, UDP): no state change.
    pub fn add_offloaded(
        &mut self,
        dir: Dir,
        packets: u64,
        bytes: u64,
        last_ns: u64,
        since_ns: u64,
    ) {
        if packets == 0 {
            return;
        }
        let side = match dir {
            Dir::AtoB => 0,
            Dir::BtoA => 1,
        };
        if self.flags & F_ACTIVE == 0 {
            self.flags |= F_ACTIVE;
            self.interval_first_ns = since_ns.min(last_ns);
        }
        let p = u32::try_from(packets).unwrap_or(u32::MAX);
        self.packets[side] = self.packets[side].saturating_add(p);
        self.bytes[side] = self.bytes[side].saturating_add(bytes);
        self.last_ns = self.last_ns.max(last_ns);
    }

    /// Resets the interval counters after an export.
    pub(super) fn reset_interval(&mut self) {
        self.packets = [0; 2];
        self.bytes = [0; 2];
        self.flags &= !(F_ACTIVE | F_STARTED);
    }
}
