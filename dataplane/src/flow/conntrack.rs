//! Connection tracking: the TCP state machine of an entry, the idle timeouts per
//! state (felix's BPF conntrack defaults), and expiry.

use super::entry::{F_FIN_A, F_FIN_B, FlowEntry};
use super::key::Dir;
use crate::packet::tcp_flags;

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

pub(super) const SEC: u64 = 1_000_000_000;

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
pub struct TimeoutTable(pub(super) [u64; 8]);

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

impl FlowEntry {
    /// Whether a packet in `dir` with `flags` opens a new connection on this tuple
    /// (a fresh SYN from either side after the old one closed).
    #[inline]
    pub fn is_reopen(&self, flags: u8) -> bool {
        self.state.is_closed()
            && flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN
    }

    pub(super) fn tcp_transition(&mut self, dir: Dir, flags: u8) {
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
    /// ([`FlowTable::timeout_table`](super::FlowTable::timeout_table)): one load, no branch on the state.
    #[inline]
    pub fn is_expired_by(&self, now: u64, table: &TimeoutTable) -> bool {
        now.saturating_sub(self.last_ns) > table.0[usize::from(self.tclass & 7)]
    }
}
