//! Packet parsing: bytes from the wire → what the classifier and the flow table need.
//!
//! This module owns the translation of one Ethernet frame into a [`ParsedPacket`]: the
//! classifier's [`FlowKey`], the wire length, TCP flags, and the connection-tracking
//! facts the flow table needs ([`L4`]: ports, ICMP query id and direction, the quoted
//! tuple of an ICMP error). It also owns [`FragmentTracker`], the small per-worker map
//! that lets later IPv4/IPv6 fragments follow the flow of their first fragment.
//!
//! # Promise
//!
//! [`parse`] never panics, allocates or formats, whatever the input bytes: every
//! slice is hostile. Header access goes through etherparse's sliced API, which checks
//! a header's length once and then reads fields without further bounds checks; the
//! few fields read by hand (SCTP ports, quoted ICMP payloads) use checked `get`.
//! A frame either parses or is rejected with exactly one [`ParseError`] reason, so
//! per-reason counters always add up to the number of frames seen. This is checked
//! by a proptest over random and mutated frames and by the `packet_parse` fuzz target.
//!
//! # Fast path
//!
//! Most frames are untagged, unfragmented IPv4 TCP or UDP without options. For those,
//! [`parse_common`] reads the key with a few checked loads (about 40 instructions
//! instead of about 250 through every etherparse layer); everything else, or anything
//! doubtful, goes to [`parse_full`]. The fast path is a pure shortcut: a proptest and
//! the fuzz target check that whenever it answers, the full parser gives the same
//! packet.
//!
//! # What is understood
//!
//! - Link: Ethernet II, up to [`MAX_VLAN_TAGS`] stacked tags of 802.1Q (0x8100),
//!   802.1ad QinQ (0x88a8) or the legacy 0x9100. VLAN ids are not part of the key.
//! - Network: IPv4 with options (and an AH header), IPv6 with any chain of extension
//!   headers (hop-by-hop, routing, fragment, destination options, AH).
//! - Transport: TCP, UDP, SCTP (ports), ICMP and ICMPv6 (type and code in the key's
//!   ports, query id and request/reply, the quoted packet of an error). Any other
//!   protocol is classified with ports 0 and tracked by address pair.
//!
//! Not understood, and rejected as [`ParseError::NonIp`]: ARP, MPLS (the inner packet
//! is not looked at), PPPoE, MACsec, 802.3 length frames (LLC/SNAP), every other
//! ethertype. A configurable [`UnparsedPolicy`] decides whether rejected frames are
//! dropped (the default) or passed without policy.
//!
//! # Truncation
//!
//! A frame may be cut by the capture (`data.len() < wire_len`, e.g. a pcap with a
//! small snaplen). Such a frame is parsed *laxly*: IP and UDP length fields may point
//! past the captured bytes, as long as every header the key needs is present
//! ([`ParsedPacket::snapped`] is set). A frame that is *not* capture-truncated must be
//! self-consistent: an IP total/payload length beyond the frame is
//! [`ParseError::Truncated`] (Linux counts it as a truncated packet and drops it), a
//! UDP length beyond its IP payload is [`ParseError::Malformed`]. A header that ends
//! beyond the captured bytes is [`ParseError::Truncated`] in both cases.
//!
//! # Fragments
//!
//! Linux conntrack reassembles before policy sees a datagram; tiergate does not
//! reassemble (it forwards fragments as they come) but keeps the same verdict for
//! every fragment of a datagram:
//! - The first fragment (offset 0) carries the transport header and is parsed like an
//!   unfragmented packet; [`Fragment::First`] records its IP identification.
//! - A later fragment has no transport header. [`parse`] returns it with ports 0 and
//!   [`L4::NoPorts`], marked [`Fragment::Later`]. [`FragmentTracker::resolve`] then gives
//!   it the ports (and L4 facts) of its first fragment, found by
//!   (family, src, dst, protocol, identification), so it is classified and counted
//!   with its datagram's flow.
//! - A later fragment whose first fragment was not seen (lost, reordered, or evicted
//!   from the small tracker) keeps ports 0: it is classified as its own flow, so a
//!   port-specific allow rule does not match it while an address/protocol rule does.
//!   This is the documented rule for out-of-order fragments.

use etherparse::{
    EtherType, Ethernet2Slice, Icmpv4Slice, Icmpv6Slice, IpNumber, Ipv4HeaderSlice,
    Ipv6ExtensionSlice, Ipv6ExtensionsSlice, Ipv6HeaderSlice, LaxIpv4Slice, LaxIpv6Slice,
    SingleVlanSlice, TcpSlice, UdpHeaderSlice,
};

use crate::program::{Family, FlowKey, proto};

/// The deepest stack of VLAN tags that is walked; more is [`ParseError::Malformed`].
pub const MAX_VLAN_TAGS: usize = 4;

/// Why a frame was not parsed into a [`ParsedPacket`]. Exactly one reason per frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// A header the key needs ends beyond the captured bytes, or (on a frame the
    /// capture did not cut) the IP length says more than the frame holds.
    Truncated,
    /// A header is present but inconsistent (bad version, header length, UDP length,
    /// too many VLAN tags, IPv6 extension header order).
    Malformed,
    /// Not IPv4/IPv6 (ARP, MPLS, LLC, unknown ethertype).
    NonIp,
}

impl ParseError {
    /// Every reason, in counter order.
    pub const ALL: [ParseError; 3] = [
        ParseError::Truncated,
        ParseError::Malformed,
        ParseError::NonIp,
    ];

    /// Stable lowercase name (for reports and JSON).
    pub const fn name(self) -> &'static str {
        match self {
            ParseError::Truncated => "truncated",
            ParseError::Malformed => "malformed",
            ParseError::NonIp => "non_ip",
        }
    }
}

/// What to do with a frame that did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Disposition {
    /// Drop it (counted).
    #[default]
    Drop,
    /// Forward it without policy (counted).
    Pass,
}

/// The configurable handling of unparsed frames (default: drop everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct UnparsedPolicy {
    /// Frames that are not IP ([`ParseError::NonIp`]).
    pub non_ip: Disposition,
    /// Truncated or malformed IP frames.
    pub invalid: Disposition,
}

impl UnparsedPolicy {
    /// The disposition of a frame rejected for `reason`.
    pub const fn disposition(&self, reason: ParseError) -> Disposition {
        match reason {
            ParseError::NonIp => self.non_ip,
            ParseError::Truncated | ParseError::Malformed => self.invalid,
        }
    }
}

/// TCP flag bits as they appear in the header's flags byte.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
}

/// How a connection is identified and whether it has a reply direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnClass {
    /// TCP, UDP, SCTP: addresses and ports, both directions.
    Ports,
    /// ICMP query (echo, timestamp, information, address mask, node information):
    /// `sport` is the query id and `dport` the request type; `reply` is true for the
    /// reply message.
    Query {
        /// This message is the reply of the pair.
        reply: bool,
    },
    /// ICMP message without a reply (errors not related to a flow, router/neighbour
    /// discovery, ...): addresses, type and code, one direction only.
    OneWay,
    /// Any other protocol: addresses and protocol, both directions, ports 0.
    Generic,
}

/// The tuple that identifies a connection, in the direction of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnTuple {
    /// Source address (IPv4 in the low 32 bits).
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// Source port; ICMP query: the id; one-way ICMP: the type.
    pub sport: u16,
    /// Destination port; ICMP query: the request type; one-way ICMP: the code.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Address family.
    pub family: Family,
    /// How the tuple pairs directions.
    pub class: ConnClass,
}

/// Transport-layer facts of a parsed packet beyond the [`FlowKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP, UDP or SCTP; the ports are in the key.
    Ports,
    /// ICMP/ICMPv6 query message (type and code are in the key).
    IcmpQuery {
        /// Query identifier (shared by request and reply).
        id: u16,
        /// This is the reply message.
        reply: bool,
    },
    /// ICMP/ICMPv6 error quoting a packet; `quoted` is the quoted packet's tuple in its
    /// own direction (sent by this error's destination).
    IcmpError {
        /// The connection the error is about.
        quoted: ConnTuple,
    },
    /// ICMP/ICMPv6 message with no reply pairing (or an error whose quote is unusable).
    IcmpOther,
    /// A protocol without ports, or a later fragment not (yet) resolved.
    NoPorts,
}

/// Fragmentation status of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// Not a fragment.
    None,
    /// First fragment (offset 0, more fragments follow); the transport header is here.
    First {
        /// IP identification (IPv4: 16 bits; IPv6: 32 bits).
        id: u32,
    },
    /// A later fragment (offset > 0); no transport header.
    Later {
        /// IP identification.
        id: u32,
    },
}

/// One successfully parsed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParsedPacket {
    /// The classification key (ifindex set from the receiving port).
    pub key: FlowKey,
    /// Length of the frame on the wire (bytes counters use this).
    pub wire_len: u32,
    /// TCP flags byte (0 for other protocols).
    pub tcp_flags: u8,
    /// Transport facts for connection tracking.
    pub l4: L4,
    /// Fragmentation status.
    pub fragment: Fragment,
    /// The capture cut the frame (`captured < wire_len`); lengths were checked laxly.
    pub snapped: bool,
}

impl ParsedPacket {
    /// The connection tuple of this packet, in its own direction.
    pub fn conn(&self) -> ConnTuple {
        let k = &self.key;
        let (sport, dport, class) = match self.l4 {
            L4::Ports => (k.sport, k.dport, ConnClass::Ports),
            L4::IcmpQuery { id, reply } => (
                id,
                u16::from(icmp_request_type(k.family, k.sport as u8)),
                ConnClass::Query { reply },
            ),
            L4::IcmpError { .. } | L4::IcmpOther => (k.sport, k.dport, ConnClass::OneWay),
            L4::NoPorts => (k.sport, k.dport, ConnClass::Generic),
        };
        ConnTuple {
            src: k.src,
            dst: k.dst,
            sport,
            dport,
            proto: k.proto,
            family: k.family,
            class,
        }
    }

    /// For an ICMP error: the connection it is about.
    pub fn related(&self) -> Option<ConnTuple> {
        match self.l4 {
            L4::IcmpError { quoted } => Some(quoted),
            _ => None,
        }
    }
}

/// Counters of a parser's callers: one per outcome; they add up to frames seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseCounters {
    /// Frames parsed into a key.
    pub parsed: u64,
    /// [`ParseError::Truncated`].
    pub truncated: u64,
    /// [`ParseError::Malformed`].
    pub malformed: u64,
    /// [`ParseError::NonIp`].
    pub non_ip: u64,
    /// Parsed frames that the capture had cut (subset of `parsed`).
    pub snapped: u64,
}

impl ParseCounters {
    /// Counts the outcome of one [`parse`].
    #[inline]
    pub fn record(&mut self, r: &Result<ParsedPacket, ParseError>) {
        match r {
            Ok(p) => {
                self.parsed += 1;
                self.snapped += u64::from(p.snapped);
            }
            Err(e) => *self.slot(*e) += 1,
        }
    }

    fn slot(&mut self, e: ParseError) -> &mut u64 {
        match e {
            ParseError::Truncated => &mut self.truncated,
            ParseError::Malformed => &mut self.malformed,
            ParseError::NonIp => &mut self.non_ip,
        }
    }

    /// Frames seen: the sum of all outcomes.
    pub fn total(&self) -> u64 {
        self.parsed + self.truncated + self.malformed + self.non_ip
    }

    /// The count for one rejection reason.
    pub fn rejected(&self, e: ParseError) -> u64 {
        match e {
            ParseError::Truncated => self.truncated,
            ParseError::Malformed => self.malformed,
            ParseError::NonIp => self.non_ip,
        }
    }

    /// Adds another set of counters (aggregation across workers).
    pub fn add(&mut self, o: &ParseCounters) {
        self.parsed += o.parsed;
        self.truncated += o.truncated;
        self.malformed += o.malformed;
        self.non_ip += o.non_ip;
        self.snapped += o.snapped;
    }
}

/// ICMP (v4) types that are errors quoting the offending packet.
const fn icmp4_is_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

/// ICMPv6 error types (1..=4; 0..=127 are errors, only these are defined).
const fn icmp6_is_error(t: u8) -> bool {
    matches!(t, 1..=4)
}

/// For ICMP query types: `Some(reply?)`; `None` for every other type.
const fn icmp_query(family: Family, t: u8) -> Option<bool> {
    match family {
        Family::V4 => match t {
            8 | 13 | 15 | 17 => Some(false),
            0 | 14 | 16 | 18 => Some(true),
            _ => None,
        },
        Family::V6 => match t {
            128 | 139 => Some(false),
            129 | 140 => Some(true),
            _ => None,
        },
    }
}

/// The request type of an ICMP query pair, given either message's type.
pub const fn icmp_request_type(family: Family, t: u8) -> u8 {
    match (family, t) {
        (Family::V4, 0) => 8,
        (Family::V4, 14 | 16 | 18) => t - 1,
        (Family::V6, 129 | 140) => t - 1,
        _ => t,
    }
}

/// The (v4 ICMP / v6 ICMPv6) protocol number of a family.
const fn icmp_proto(family: Family) -> u8 {
    match family {
        Family::V4 => proto::ICMP,
        Family::V6 => proto::ICMPV6,
    }
}

fn v4_addr(b: [u8; 4]) -> u128 {
    u128::from(u32::from_be_bytes(b))
}

fn v6_addr(b: [u8; 16]) -> u128 {
    u128::from_be_bytes(b)
}

/// The network-layer result handed to the transport parser.
struct Net<'a> {
    family: Family,
    src: u128,
    dst: u128,
    proto: u8,
    payload: &'a [u8],
    fragment: Fragment,
}

/// Parses one Ethernet frame.
///
/// `data` is the captured bytes, `wire_len` the frame's length on the wire (pcap's
/// original length; for a live port the frame length). `ifindex` goes into the key.
/// Never panics, allocates or formats (see the module documentation).
#[inline]
pub fn parse(data: &[u8], wire_len: u32, ifindex: u16) -> Result<ParsedPacket, ParseError> {
    match parse_common(data, wire_len, ifindex) {
        Some(p) => Ok(p),
        None => parse_full(data, wire_len, ifindex),
    }
}

/// The fast path: an untagged, unfragmented, option-less IPv4 TCP or UDP frame that
/// the capture did not cut and whose lengths are consistent — the bulk of traffic —
/// read with a handful of loads from the first 48 bytes. Anything else (or anything
/// doubtful) returns `None` and goes through [`parse_full`]; a proptest checks that
/// whenever this returns a packet, [`parse_full`] returns the same one.
///
/// TCP and UDP are validated side by side and the result selected, rather than
/// branched on: with mixed traffic the protocol is what a branch predictor cannot
/// guess. A frame shorter than 48 bytes (below Ethernet's 60-byte minimum; only a
/// UDP datagram can be that short and valid) is left to [`parse_full`].
#[inline]
pub fn parse_common(data: &[u8], wire_len: u32, ifindex: u16) -> Option<ParsedPacket> {
    let len = data.len();
    if (len as u64) < u64::from(wire_len) {
        return None;
    }
    let h: &[u8; 48] = data.first_chunk::<48>()?;
    let be = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    // Ethertype IPv4, version 4 with a 20-byte header, no fragmentation (DF allowed).
    if be(12) != 0x0800 || h[14] != 0x45 || be(20) & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(be(16));
    if total < 20 || 14 + total > len {
        return None;
    }
    let l4_len = total - 20;
    let proto = h[23];
    let is_tcp = proto == proto::TCP;
    let doff = usize::from(h[46] >> 4) * 4;
    let tcp_ok = (doff >= 20) & (l4_len >= doff);
    let ulen = usize::from(be(38));
    let udp_ok =
        (proto == proto::UDP) & (l4_len >= 8) & ((ulen == 0) | ((ulen >= 8) & (ulen <= l4_len)));
    if !std::hint::select_unpredictable(is_tcp, tcp_ok, udp_ok) {
        return None;
    }
    let tcp_flags = std::hint::select_unpredictable(is_tcp, h[47], 0);
    let addr = |i: usize| u128::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    Some(ParsedPacket {
        key: FlowKey {
            src: addr(26),
            dst: addr(30),
            sport: be(34),
            dport: be(36),
            proto,
            family: Family::V4,
            ifindex,
        },
        wire_len: wire_len.max(u32::try_from(len).unwrap_or(u32::MAX)),
        tcp_flags,
        l4: L4::Ports,
        fragment: Fragment::None,
        snapped: false,
    })
}

/// The complete parser (etherparse's sliced API for every layer); [`parse`] uses it
/// for everything [`parse_common`] declines.
pub fn parse_full(data: &[u8], wire_len: u32, ifindex: u16) -> Result<ParsedPacket, ParseError> {
    let snapped = (data.len() as u64) < u64::from(wire_len);
    let wire_len = wire_len.max(u32::try_from(data.len()).unwrap_or(u32::MAX));

    let eth = Ethernet2Slice::from_slice_without_fcs(data).map_err(|_| ParseError::Truncated)?;
    let mut ether_type = eth.ether_type();
    let mut rest = eth.payload_slice();
    let mut tags = 0usize;
    loop {
        match ether_type {
            EtherType::VLAN_TAGGED_FRAME
            | EtherType::PROVIDER_BRIDGING
            | EtherType::VLAN_DOUBLE_TAGGED_FRAME => {
                tags += 1;
                if tags > MAX_VLAN_TAGS {
                    return Err(ParseError::Malformed);
                }
                let vlan = SingleVlanSlice::from_slice(rest).map_err(|_| ParseError::Truncated)?;
                ether_type = vlan.ether_type();
                rest = vlan.payload_slice();
            }
            EtherType::IPV4 => {
                let net = parse_ipv4(rest, snapped)?;
                return finish(net, wire_len, ifindex, snapped);
            }
            EtherType::IPV6 => {
                let net = parse_ipv6(rest, snapped)?;
                return finish(net, wire_len, ifindex, snapped);
            }
            _ => return Err(ParseError::NonIp),
        }
    }
}

#[inline]
fn parse_ipv4(data: &[u8], snapped: bool) -> Result<Net<'_>, ParseError> {
    use etherparse::err::ipv4::HeaderSliceError as E;
    let (ip, auth_err) = LaxIpv4Slice::from_slice(data).map_err(|e| match e {
        E::Len(_) => ParseError::Truncated,
        E::Content(_) => ParseError::Malformed,
    })?;
    let header = ip.header();
    let header_len = header.slice().len();
    if usize::from(header.total_len()) < header_len {
        return Err(ParseError::Malformed);
    }
    if ip.payload().incomplete && !snapped {
        return Err(ParseError::Truncated);
    }
    if let Some(err) = auth_err {
        return Err(match err {
            etherparse::err::ip_auth::HeaderSliceError::Len(_) => ParseError::Truncated,
            etherparse::err::ip_auth::HeaderSliceError::Content(_) => ParseError::Malformed,
        });
    }
    let offset = header.fragments_offset().value();
    let id = u32::from(header.identification());
    let fragment = if offset > 0 {
        Fragment::Later { id }
    } else if header.more_fragments() {
        Fragment::First { id }
    } else {
        Fragment::None
    };
    let payload = ip.payload();
    Ok(Net {
        family: Family::V4,
        src: v4_addr(header.source()),
        dst: v4_addr(header.destination()),
        proto: payload.ip_number.0,
        payload: payload.payload,
        fragment,
    })
}

#[inline]
fn parse_ipv6(data: &[u8], snapped: bool) -> Result<Net<'_>, ParseError> {
    use etherparse::err::ipv6::HeaderSliceError as E;
    use etherparse::err::ipv6_exts::HeaderSliceError as X;
    let (ip, ext_err) = LaxIpv6Slice::from_slice(data).map_err(|e| match e {
        E::Len(_) => ParseError::Truncated,
        E::Content(_) => ParseError::Malformed,
    })?;
    if ip.payload().incomplete && !snapped {
        return Err(ParseError::Truncated);
    }
    if let Some((err, _layer)) = ext_err {
        return Err(match err {
            X::Len(_) => ParseError::Truncated,
            X::Content(_) => ParseError::Malformed,
        });
    }
    let mut fragment = Fragment::None;
    for ext in ip.extensions().clone() {
        if let Ipv6ExtensionSlice::Fragment(f) = ext {
            let id = f.identification();
            if f.fragment_offset().value() > 0 {
                fragment = Fragment::Later { id };
            } else if f.more_fragments() {
                fragment = Fragment::First { id };
            }
        }
    }
    let header = ip.header();
    let payload = ip.payload();
    Ok(Net {
        family: Family::V6,
        src: v6_addr(header.source()),
        dst: v6_addr(header.destination()),
        proto: payload.ip_number.0,
        payload: payload.payload,
        fragment,
    })
}

#[inline]
fn finish(
    net: Net<'_>,
    wire_len: u32,
    ifindex: u16,
    snapped: bool,
) -> Result<ParsedPacket, ParseError> {
    let mut key = FlowKey {
        src: net.src,
        dst: net.dst,
        sport: 0,
        dport: 0,
        proto: net.proto,
        family: net.family,
        ifindex,
    };
    let mut tcp_flags = 0u8;
    let l4 = if matches!(net.fragment, Fragment::Later { .. }) {
        L4::NoPorts
    } else {
        let t = parse_transport(&net, snapped)?;
        key.sport = t.sport;
        key.dport = t.dport;
        tcp_flags = t.tcp_flags;
        t.l4
    };
    Ok(ParsedPacket {
        key,
        wire_len,
        tcp_flags,
        l4,
        fragment: net.fragment,
        snapped,
    })
}

struct Transport {
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    l4: L4,
}

#[inline]
fn parse_transport(net: &Net<'_>, snapped: bool) -> Result<Transport, ParseError> {
    let p = net.payload;
    match (net.family, net.proto) {
        (_, proto::TCP) => {
            use etherparse::err::tcp::HeaderSliceError as E;
            let tcp = TcpSlice::from_slice(p).map_err(|e| match e {
                E::Len(_) => ParseError::Truncated,
                E::Content(_) => ParseError::Malformed,
            })?;
            // The flags byte is byte 13 of the header; TcpSlice checked the length.
            let flags = tcp.header_slice().get(13).copied().unwrap_or(0);
            Ok(Transport {
                sport: tcp.source_port(),
                dport: tcp.destination_port(),
                tcp_flags: flags,
                l4: L4::Ports,
            })
        }
        (_, proto::UDP) => {
            let udp = UdpHeaderSlice::from_slice(p).map_err(|_| ParseError::Truncated)?;
            let len = usize::from(udp.length());
            // 0 is allowed (IPv6 jumbograms); otherwise the length must be sane, and
            // within the datagram unless the capture cut it.
            let fragmented = !matches!(net.fragment, Fragment::None);
            if len != 0 && (len < 8 || (len > p.len() && !snapped && !fragmented)) {
                return Err(ParseError::Malformed);
            }
            Ok(Transport {
                sport: udp.source_port(),
                dport: udp.destination_port(),
                tcp_flags: 0,
                l4: L4::Ports,
            })
        }
        (_, proto::SCTP) => {
            // SCTP common header: sport, dport, verification tag, checksum (12 bytes).
            let h = p.get(..12).ok_or(ParseError::Truncated)?;
            Ok(Transport {
                sport: u16::from_be_bytes([h[0], h[1]]),
                dport: u16::from_be_bytes([h[2], h[3]]),
                tcp_flags: 0,
                l4: L4::Ports,
            })
        }
        (Family::V4, proto::ICMP) => {
            let icmp = Icmpv4Slice::from_slice(p).map_err(|_| ParseError::Truncated)?;
            let t = icmp.type_u8();
            Ok(icmp_transport(
                Family::V4,
                t,
                icmp.code_u8(),
                icmp.bytes5to8(),
                || {
                    icmp4_is_error(t)
                        .then(|| quoted_v4(icmp.payload()))
                        .flatten()
                },
            ))
        }
        (Family::V6, proto::ICMPV6) => {
            let icmp = Icmpv6Slice::from_slice(p).map_err(|_| ParseError::Truncated)?;
            let t = icmp.type_u8();
            Ok(icmp_transport(
                Family::V6,
                t,
                icmp.code_u8(),
                icmp.bytes5to8(),
                || {
                    icmp6_is_error(t)
                        .then(|| quoted_v6(icmp.payload()))
                        .flatten()
                },
            ))
        }
        _ => Ok(Transport {
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            l4: L4::NoPorts,
        }),
    }
}

/// The quoted packet's tuple from the first bytes of its transport header. `None`
/// when the quote is unusable (too short, a later fragment, or itself an ICMP error:
/// errors about errors are never related to a connection).
fn quoted_transport(
    family: Family,
    src: u128,
    dst: u128,
    ip_proto: u8,
    l4: &[u8],
) -> Option<ConnTuple> {
    let (sport, dport, class) = if proto::has_ports(ip_proto) {
        let h = l4.get(..4)?;
        (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]),
            ConnClass::Ports,
        )
    } else if ip_proto == icmp_proto(family) {
        let h = l4.get(..6)?;
        let reply = icmp_query(family, h[0])?;
        (
            u16::from_be_bytes([h[4], h[5]]),
            u16::from(icmp_request_type(family, h[0])),
            ConnClass::Query { reply },
        )
    } else {
        (0, 0, ConnClass::Generic)
    };
    Some(ConnTuple {
        src,
        dst,
        sport,
        dport,
        proto: ip_proto,
        family,
        class,
    })
}

/// The transport fields of an ICMP message of type `t` and code `c` (the port
/// columns of the key), `b` its bytes 5 to 8: a query's identifier, or for an error
/// the connection it quotes (`quoted`, called only for error types).
#[inline]
fn icmp_transport(
    family: Family,
    t: u8,
    c: u8,
    b: [u8; 4],
    quoted: impl FnOnce() -> Option<ConnTuple>,
) -> Transport {
    let l4 = if let Some(reply) = icmp_query(family, t) {
        L4::IcmpQuery {
            id: u16::from_be_bytes([b[0], b[1]]),
            reply,
        }
    } else {
        quoted().map_or(L4::IcmpOther, |quoted| L4::IcmpError { quoted })
    };
    Transport {
        sport: u16::from(t),
        dport: u16::from(c),
        tcp_flags: 0,
        l4,
    }
}

fn quoted_v4(q: &[u8]) -> Option<ConnTuple> {
    let h = Ipv4HeaderSlice::from_slice(q).ok()?;
    if h.fragments_offset().value() > 0 {
        return None;
    }
    let rest = q.get(h.slice().len()..)?;
    quoted_transport(
        Family::V4,
        v4_addr(h.source()),
        v4_addr(h.destination()),
        h.protocol().0,
        rest,
    )
}

fn quoted_v6(q: &[u8]) -> Option<ConnTuple> {
    let h = Ipv6HeaderSlice::from_slice(q).ok()?;
    let rest = q.get(h.slice().len()..)?;
    let (exts, next, payload, err) = Ipv6ExtensionsSlice::from_slice_lax(h.next_header(), rest);
    if err.is_some() {
        return None;
    }
    for ext in exts {
        if let Ipv6ExtensionSlice::Fragment(f) = ext
            && f.fragment_offset().value() > 0
        {
            return None;
        }
    }
    let next: IpNumber = next;
    quoted_transport(
        Family::V6,
        v6_addr(h.source()),
        v6_addr(h.destination()),
        next.0,
        payload,
    )
}

// ---------------------------------------------------------------------------------
// Fragment tracking

/// What a first fragment leaves for its later fragments.
#[derive(Clone, Copy, Debug)]
struct FragSlot {
    family: Family,
    proto: u8,
    src: u128,
    dst: u128,
    id: u32,
    sport: u16,
    dport: u16,
    l4: L4,
    /// Packet time (ns) after which the slot is stale.
    expires: u64,
    used: bool,
}

/// How long a first fragment's ports are remembered (Linux `ipfrag_time` is 30 s).
pub const FRAGMENT_TIMEOUT_NS: u64 = 30_000_000_000;

/// A small, direct-mapped, seeded map (family, src, dst, proto, IP id) → ports of a
/// datagram's first fragment, so later fragments follow its flow. One per worker (and
/// one in the replay dispatcher, so fragments reach the worker of their first
/// fragment). A collision overwrites: memory is fixed, lookups are one probe.
#[derive(Debug)]
pub struct FragmentTracker {
    slots: Box<[FragSlot]>,
    mask: usize,
    hasher: foldhash::fast::FixedState,
    /// Later fragments that found their first fragment.
    pub resolved: u64,
    /// Later fragments that did not (classified with ports 0).
    pub unresolved: u64,
}

impl FragmentTracker {
    /// A tracker with `capacity` slots (rounded up to a power of two, at least 1),
    /// hashing with `seed`.
    pub fn new(capacity: usize, seed: u64) -> Self {
        let n = capacity.max(1).next_power_of_two();
        let empty = FragSlot {
            family: Family::V4,
            proto: 0,
            src: 0,
            dst: 0,
            id: 0,
            sport: 0,
            dport: 0,
            l4: L4::NoPorts,
            expires: 0,
            used: false,
        };
        FragmentTracker {
            slots: vec![empty; n].into_boxed_slice(),
            mask: n - 1,
            hasher: foldhash::fast::FixedState::with_seed(seed),
            resolved: 0,
            unresolved: 0,
        }
    }

    fn index(&self, k: &FlowKey, id: u32) -> usize {
        use std::hash::BuildHasher;
        let h = self
            .hasher
            .hash_one((k.family as u8, k.proto, k.src, k.dst, id));
        (h as usize) & self.mask
    }

    /// Records a first fragment and fills in a later one (see the module docs).
    /// `now` is the packet time in nanoseconds. Other packets are left as they are.
    pub fn resolve(&mut self, p: &mut ParsedPacket, now: u64) {
        match p.fragment {
            Fragment::None => {}
            Fragment::First { id } => {
                let i = self.index(&p.key, id);
                if let Some(s) = self.slots.get_mut(i) {
                    *s = FragSlot {
                        family: p.key.family,
                        proto: p.key.proto,
                        src: p.key.src,
                        dst: p.key.dst,
                        id,
                        sport: p.key.sport,
                        dport: p.key.dport,
                        l4: p.l4,
                        expires: now.saturating_add(FRAGMENT_TIMEOUT_NS),
                        used: true,
                    };
                }
            }
            Fragment::Later { id } => {
                let i = self.index(&p.key, id);
                let k = p.key;
                match self.slots.get(i) {
                    Some(s)
                        if s.used
                            && s.id == id
                            && s.family == k.family
                            && s.proto == k.proto
                            && s.src == k.src
                            && s.dst == k.dst
                            && now <= s.expires =>
                    {
                        p.key.sport = s.sport;
                        p.key.dport = s.dport;
                        p.l4 = s.l4;
                        self.resolved += 1;
                    }
                    _ => self.unresolved += 1,
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testpkt {
    //! Hand-built frames for golden tests (etherparse's builder).

    use etherparse::PacketBuilder;

    pub const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    pub const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    pub fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, syn: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 1000);
        if syn {
            b = b.syn();
        } else {
            b = b.ack(1);
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).expect("builder writes to a Vec");
        out
    }

    /// A TCP/IPv4 frame with the given flags byte (see `packet::tcp_flags`).
    pub fn tcp4_flags(
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        use super::tcp_flags::*;
        let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 1000);
        if flags & SYN != 0 {
            b = b.syn();
        }
        if flags & ACK != 0 {
            b = b.ack(1);
        }
        if flags & FIN != 0 {
            b = b.fin();
        }
        if flags & RST != 0 {
            b = b.rst();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("builder writes to a Vec");
        out
    }

    pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(src, dst, 64)
            .udp(sport, dport);
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("builder writes to a Vec");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testpkt::*;
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn v4(a: [u8; 4]) -> u128 {
        v4_addr(a)
    }

    fn parse_all(d: &[u8]) -> Result<ParsedPacket, ParseError> {
        parse(d, d.len() as u32, 3)
    }

    #[test]
    fn tcp_syn_key_and_flags() {
        let f = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 6379, true);
        let p = parse_all(&f).expect("parses");
        assert_eq!(p.key.src, v4([10, 0, 0, 1]));
        assert_eq!(p.key.dst, v4([10, 0, 0, 2]));
        assert_eq!((p.key.sport, p.key.dport, p.key.proto), (40000, 6379, 6));
        assert_eq!(p.key.ifindex, 3);
        assert_eq!(p.key.family, Family::V4);
        assert_eq!(p.tcp_flags & tcp_flags::SYN, tcp_flags::SYN);
        assert_eq!(p.tcp_flags & tcp_flags::ACK, 0);
        assert_eq!(p.l4, L4::Ports);
        assert_eq!(p.fragment, Fragment::None);
        assert_eq!(p.wire_len as usize, f.len());
        assert!(!p.snapped);
    }

    /// Inserts VLAN tags with the given TPIDs after the MAC addresses.
    fn tagged(frame: &[u8], tpids: &[u16]) -> Vec<u8> {
        let mut out = frame[..12].to_vec();
        for (i, t) in tpids.iter().enumerate() {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        out.extend_from_slice(&frame[12..]);
        out
    }

    #[test]
    fn vlan_and_qinq_are_walked() {
        let f = udp4([192, 168, 1, 1], [192, 168, 1, 2], 53, 5353, b"hello");
        let plain = parse_all(&f).expect("plain");
        for tpids in [&[0x8100][..], &[0x88a8, 0x8100], &[0x9100, 0x8100, 0x8100]] {
            let t = tagged(&f, tpids);
            let p = parse_all(&t).expect("tagged parses");
            assert_eq!(p.key, plain.key, "tags {tpids:x?}");
            assert_eq!(p.wire_len as usize, t.len());
        }
        let too_deep = tagged(&f, &[0x8100; MAX_VLAN_TAGS + 1]);
        assert_eq!(parse_all(&too_deep), Err(ParseError::Malformed));
    }

    #[test]
    fn non_ip_and_truncation() {
        let f = udp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, b"x");
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse_all(&arp), Err(ParseError::NonIp));
        let mut mpls = f.clone();
        mpls[12..14].copy_from_slice(&0x8847u16.to_be_bytes());
        assert_eq!(parse_all(&mpls), Err(ParseError::NonIp));
        assert_eq!(parse_all(&f[..10]), Err(ParseError::Truncated));
        // Cut inside the IPv4 header.
        assert_eq!(parse_all(&f[..14 + 10]), Err(ParseError::Truncated));
        // Cut inside the UDP header: truncated whether or not the capture says so.
        assert_eq!(parse_all(&f[..14 + 20 + 4]), Err(ParseError::Truncated));
        assert_eq!(
            parse(&f[..14 + 20 + 4], f.len() as u32, 0),
            Err(ParseError::Truncated)
        );
        // Cut inside the payload: truncated on a live frame (the IP length says
        // more), fine when the capture cut it.
        let cut = &f[..f.len() - 1];
        assert_eq!(parse_all(cut), Err(ParseError::Truncated));
        let p = parse(cut, f.len() as u32, 0).expect("snapped frame parses");
        assert!(p.snapped);
        assert_eq!(p.wire_len as usize, f.len());
        assert_eq!((p.key.sport, p.key.dport), (1, 2));
    }

    #[test]
    fn bad_ip_version_is_malformed() {
        let f = udp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, b"x");
        let mut g = f.clone();
        g[14] = 0x65; // version 6 under ethertype IPv4
        assert_eq!(parse_all(&g), Err(ParseError::Malformed));
        let mut h = f;
        h[14] = 0x44; // IHL 4 < 5
        assert_eq!(parse_all(&h), Err(ParseError::Malformed));
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let mut b = Vec::new();
        let mut ip =
            etherparse::Ipv4Header::new(8, 64, IpNumber::UDP, [10, 1, 1, 1], [10, 1, 1, 2])
                .expect("header");
        ip.options = [1u8, 1, 1, 0][..].try_into().expect("options");
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .udp(1000, 2000)
            .write(&mut b, &[])
            .expect("write");
        let p = parse_all(&b).expect("parses");
        assert_eq!((p.key.sport, p.key.dport, p.key.proto), (1000, 2000, 17));
    }

    fn v6a(last: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = last;
        a
    }

    #[test]
    fn ipv6_extension_headers_reach_tcp() {
        use etherparse::{IpHeaders, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader};
        let ip = Ipv6Header {
            source: v6a(1),
            destination: v6a(2),
            hop_limit: 64,
            ..Default::default()
        };
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(Ipv6RawExtHeader::new_raw(IpNumber(0), &[0; 6]).expect("hbh")),
            destination_options: Some(
                Ipv6RawExtHeader::new_raw(IpNumber(0), &[0; 6]).expect("dst"),
            ),
            ..Default::default()
        };
        let mut b = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ip(IpHeaders::Ipv6(ip, exts))
            .tcp(443, 55555, 7, 100)
            .syn()
            .write(&mut b, &[])
            .expect("write");
        let p = parse_all(&b).expect("parses");
        assert_eq!(p.key.family, Family::V6);
        assert_eq!(p.key.src, v6_addr(v6a(1)));
        assert_eq!((p.key.sport, p.key.dport, p.key.proto), (443, 55555, 6));
        assert_eq!(p.tcp_flags & tcp_flags::SYN, tcp_flags::SYN);
    }

    #[test]
    fn icmp_echo_request_and_reply_share_a_connection() {
        let mut req = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(77, 1)
            .write(&mut req, b"ping")
            .expect("write");
        let mut rep = Vec::new();
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .icmpv4_echo_reply(77, 1)
            .write(&mut rep, b"ping")
            .expect("write");
        let q = parse_all(&req).expect("request");
        let r = parse_all(&rep).expect("reply");
        assert_eq!((q.key.sport, q.key.dport), (8, 0));
        assert_eq!((r.key.sport, r.key.dport), (0, 0));
        assert_eq!(
            q.l4,
            L4::IcmpQuery {
                id: 77,
                reply: false
            }
        );
        assert_eq!(
            r.l4,
            L4::IcmpQuery {
                id: 77,
                reply: true
            }
        );
        let (cq, cr) = (q.conn(), r.conn());
        assert_eq!((cq.sport, cq.dport), (77, 8));
        assert_eq!((cr.sport, cr.dport), (77, 8));
        assert_eq!((cq.src, cq.dst), (cr.dst, cr.src));
    }

    #[test]
    fn icmp_error_yields_quoted_tuple() {
        // A UDP datagram 10.0.0.1:5000 -> 10.0.0.2:53 quoted in port-unreachable.
        let orig = udp4([10, 0, 0, 1], [10, 0, 0, 2], 5000, 53, b"query");
        let quote = &orig[14..14 + 28];
        let mut b = Vec::new();
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut b, quote)
            .expect("write");
        let p = parse_all(&b).expect("parses");
        assert_eq!((p.key.sport, p.key.dport, p.key.proto), (3, 3, 1));
        let q = p.related().expect("related tuple");
        assert_eq!(q.src, v4([10, 0, 0, 1]));
        assert_eq!(q.dst, v4([10, 0, 0, 2]));
        assert_eq!((q.sport, q.dport, q.proto), (5000, 53, 17));
        assert_eq!(q.class, ConnClass::Ports);
        assert_eq!(p.conn().class, ConnClass::OneWay);
        // A quote too short for ports: not related, still a valid ICMP packet.
        let mut c = Vec::new();
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .icmpv4(etherparse::Icmpv4Type::TimeExceeded(
                etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
            ))
            .write(&mut c, &orig[14..14 + 22])
            .expect("write");
        assert_eq!(parse_all(&c).expect("parses").l4, L4::IcmpOther);
    }

    #[test]
    fn icmpv6_error_quotes_inner_udp() {
        let mut inner = Vec::new();
        PacketBuilder::ipv6(v6a(1), v6a(2), 64)
            .udp(7000, 8000)
            .write(&mut inner, b"abc")
            .expect("write");
        let mut b = Vec::new();
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv6(v6a(9), v6a(1), 64)
            .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
                etherparse::icmpv6::DestUnreachableCode::Port,
            ))
            .write(&mut b, &inner)
            .expect("write");
        let p = parse_all(&b).expect("parses");
        assert_eq!((p.key.sport, p.key.dport, p.key.proto), (1, 4, 58));
        let q = p.related().expect("related");
        assert_eq!((q.src, q.dst), (v6_addr(v6a(1)), v6_addr(v6a(2))));
        assert_eq!((q.sport, q.dport, q.proto), (7000, 8000, 17));
    }

    /// Builds the two fragments of a UDP datagram by hand (IPv4).
    fn fragments_v4() -> (Vec<u8>, Vec<u8>) {
        let whole = udp4([10, 9, 0, 1], [10, 9, 0, 2], 4444, 2049, &[7u8; 40]);
        let ip = &whole[14..];
        let udp_and_data = &ip[20..]; // 48 bytes
        let mk = |offset_units: u16, mf: bool, data: &[u8]| {
            let mut h = ip[..20].to_vec();
            let total = (20 + data.len()) as u16;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            let ff = (u16::from(mf) << 13) | offset_units;
            h[6..8].copy_from_slice(&ff.to_be_bytes());
            let mut f = whole[..14].to_vec();
            f.extend_from_slice(&h);
            f.extend_from_slice(data);
            f
        };
        (
            mk(0, true, &udp_and_data[..24]),
            mk(3, false, &udp_and_data[24..]),
        )
    }

    #[test]
    fn later_fragments_follow_their_first_fragment() {
        let (first, later) = fragments_v4();
        let mut f = parse_all(&first).expect("first");
        let mut l = parse_all(&later).expect("later");
        assert_eq!(f.fragment, Fragment::First { id: 0x1234 });
        assert_eq!((f.key.sport, f.key.dport), (4444, 2049));
        assert_eq!(l.fragment, Fragment::Later { id: 0x1234 });
        assert_eq!((l.key.sport, l.key.dport, l.l4), (0, 0, L4::NoPorts));

        let mut t = FragmentTracker::new(64, 7);
        // Out of order: the later fragment alone stays at ports 0.
        let mut alone = l;
        t.resolve(&mut alone, 0);
        assert_eq!((alone.key.sport, t.unresolved), (0, 1));
        t.resolve(&mut f, 10);
        t.resolve(&mut l, 20);
        assert_eq!(l.key, f.key);
        assert_eq!(l.l4, L4::Ports);
        assert_eq!(t.resolved, 1);
        // Expired first fragment no longer resolves.
        let mut late = parse_all(&later).expect("later");
        t.resolve(&mut late, 10 + FRAGMENT_TIMEOUT_NS + 1);
        assert_eq!(late.key.sport, 0);
    }

    #[test]
    fn ipv6_fragment_header() {
        use etherparse::{IpFragOffset, IpHeaders, Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header};
        let ip = Ipv6Header {
            source: v6a(1),
            destination: v6a(2),
            hop_limit: 64,
            ..Default::default()
        };
        let frag = |off: u16, mf: bool| {
            let exts = Ipv6Extensions {
                fragment: Some(Ipv6FragmentHeader::new(
                    IpNumber::UDP,
                    IpFragOffset::try_new(off).expect("offset"),
                    mf,
                    99,
                )),
                ..Default::default()
            };
            let mut b = Vec::new();
            PacketBuilder::ethernet2(MAC_A, MAC_B)
                .ip(IpHeaders::Ipv6(ip.clone(), exts))
                .udp(1234, 53)
                .write(&mut b, &[0; 16])
                .expect("write");
            b
        };
        let first = parse_all(&frag(0, true)).expect("first");
        assert_eq!(first.fragment, Fragment::First { id: 99 });
        assert_eq!((first.key.sport, first.key.dport), (1234, 53));
        let later = parse_all(&frag(8, false)).expect("later");
        assert_eq!(later.fragment, Fragment::Later { id: 99 });
        assert_eq!(later.key.sport, 0);
    }

    #[test]
    fn sctp_ports() {
        let mut f = udp4([1, 1, 1, 1], [2, 2, 2, 2], 0, 0, &[0u8; 4]);
        // Rewrite the protocol to SCTP and the first 4 payload bytes to ports.
        f[14 + 9] = proto::SCTP;
        f[34..36].copy_from_slice(&3868u16.to_be_bytes());
        f[36..38].copy_from_slice(&2905u16.to_be_bytes());
        let p = parse_all(&f).expect("parses");
        assert_eq!((p.key.sport, p.key.dport, p.key.proto), (3868, 2905, 132));
        assert_eq!(parse_all(&f[..34 + 8]), Err(ParseError::Truncated));
        assert_eq!(
            parse(&f[..34 + 8], f.len() as u32, 0),
            Err(ParseError::Truncated)
        );
    }

    #[test]
    fn counters_add_up() {
        let mut c = ParseCounters::default();
        let f = udp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, b"x");
        c.record(&parse_all(&f));
        c.record(&parse_all(&f[..5]));
        c.record(&parse(&f[..f.len() - 1], f.len() as u32, 0));
        assert_eq!(c.total(), 3);
        assert_eq!((c.parsed, c.truncated, c.snapped), (2, 1, 1));
    }

    fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
        let seeds = vec![
            tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, true),
            udp4([10, 0, 0, 1], [10, 0, 0, 2], 3, 4, b"payload"),
            // Shorter than the 48 bytes the fast path reads directly.
            udp4([10, 0, 0, 1], [10, 0, 0, 2], 3, 4, b""),
            udp4([10, 0, 0, 1], [10, 0, 0, 2], 3, 4, b"abc"),
            tagged(
                &udp4([1, 2, 3, 4], [5, 6, 7, 8], 9, 10, b"p"),
                &[0x88a8, 0x8100],
            ),
            fragments_v4().0,
            fragments_v4().1,
        ];
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            (
                proptest::sample::select(seeds),
                proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
                any::<usize>()
            )
                .prop_map(|(mut f, muts, cut)| {
                    for (i, b) in muts {
                        let n = f.len();
                        f[i % n] = b;
                    }
                    let keep = cut % (f.len() + 1);
                    f.truncate(keep);
                    f
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// The fast path is a pure shortcut: whenever it accepts a frame, the complete
        /// parser returns exactly the same packet.
        #[test]
        fn fast_path_agrees_with_full_parser(frame in arb_frame(), extra in 0u32..3) {
            let wire = frame.len() as u32 + extra;
            if let Some(fast) = parse_common(&frame, wire, 9) {
                prop_assert_eq!(Ok(fast), parse_full(&frame, wire, 9));
            }
        }
    }

    #[test]
    fn fast_path_takes_plain_tcp_and_udp_only() {
        let t = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, true);
        // A minimum-size Ethernet frame (60 bytes without the FCS).
        let u = udp4([10, 0, 0, 1], [10, 0, 0, 2], 3, 4, &[b'x'; 18]);
        assert_eq!(u.len(), 60);
        assert!(parse_common(&t, t.len() as u32, 0).is_some());
        assert!(parse_common(&u, u.len() as u32, 0).is_some());
        // A UDP datagram shorter than 48 bytes goes to the full parser.
        let short = udp4([10, 0, 0, 1], [10, 0, 0, 2], 3, 4, b"");
        assert_eq!(short.len(), 42);
        assert!(parse_common(&short, 42, 0).is_none());
        assert_eq!(
            parse(&short, 42, 0).map(|p| (p.key.sport, p.tcp_flags)),
            Ok((3, 0))
        );
        assert_eq!(
            parse_common(&t, t.len() as u32, 0).map(|p| p.tcp_flags),
            Some(tcp_flags::SYN)
        );
        // Tagged, fragmented, snapped, ICMP: left to the full parser.
        assert!(parse_common(&tagged(&u, &[0x8100]), u.len() as u32 + 4, 0).is_none());
        assert!(parse_common(&fragments_v4().0, 80, 0).is_none());
        assert!(parse_common(&u, u.len() as u32 + 1, 0).is_none());
        let mut icmp = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut icmp, &[0; 20])
            .expect("write");
        assert!(parse_common(&icmp, icmp.len() as u32, 0).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Any bytes: no panic, exactly one outcome, and a parsed key is sane.
        #[test]
        fn never_panics(frame in arb_frame(), extra in 0u32..100) {
            let mut c = ParseCounters::default();
            for wire in [frame.len() as u32, frame.len() as u32 + extra] {
                let r = parse(&frame, wire, 0);
                c.record(&r);
                if let Ok(p) = r {
                    prop_assert!(p.wire_len as usize >= frame.len());
                    if p.key.family == Family::V4 {
                        prop_assert!(p.key.src <= u128::from(u32::MAX));
                    }
                    let _ = p.conn();
                }
            }
            prop_assert_eq!(c.total(), 2);
        }
    }
}
