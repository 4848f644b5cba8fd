//! Synthetic traffic: seeded, reproducible captures for tests, benchmarks and demos.
//!
//! This module owns [`GenConfig`] and [`generate`]: N flows between client and server
//! address pools, popularity following a Zipf law (flow *i* gets a share of packets
//! proportional to 1/(i+1)^s), TCP connections with handshake, data both ways and FIN
//! teardown, UDP request/response, ICMP echo pairs, IPv4 and IPv6, a share of
//! 802.1Q-tagged frames, a share of malformed frames (cut headers, bad versions,
//! non-IP), and frame sizes from 64-byte minimum frames to an IMIX mix. The same
//! config and seed always produce the same bytes (the PRNG is defined here, not taken
//! from a crate whose stream could change).
//!
//! [`tuples_to_frames`] turns a list of 5-tuples (a ClassBench trace read with
//! [`crate::classbench::read_trace`], say) into one minimum-size frame per tuple.

use std::net::IpAddr;

use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv6Header, PacketBuilder};

use crate::capture::{FrameRef, Frames};

/// SplitMix64: a small, well-mixed, fully specified PRNG (stable across versions).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; 0 returns 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Frame sizes.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum FrameSize {
    /// The smallest frame: 60 bytes captured (64 on the wire with FCS), or the
    /// headers' size if larger (IPv6, VLAN).
    #[default]
    Min,
    /// Simple IMIX: 7 : 4 : 1 of 64, 576 and 1500-byte frames (wire sizes).
    Imix,
    /// Every frame this many bytes on the wire (≥ the headers).
    Fixed(u16),
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenConfig {
    /// PRNG seed.
    pub seed: u64,
    /// Number of flows (connections).
    pub flows: usize,
    /// Approximate number of frames in total (each flow gets at least its minimum:
    /// handshake + teardown for TCP, one exchange for UDP/ICMP).
    pub packets: usize,
    /// Zipf exponent of flow popularity (0 = uniform).
    pub zipf_s: f64,
    /// Share of flows over IPv6.
    pub ipv6_share: f64,
    /// Share of flows whose frames carry an 802.1Q tag.
    pub vlan_share: f64,
    /// Share of flows that are UDP.
    pub udp_share: f64,
    /// Share of flows that are ICMP echo (the rest is TCP).
    pub icmp_share: f64,
    /// Share of frames replaced by a malformed or non-IP frame.
    pub malformed_share: f64,
    /// TCP connections open with a handshake and close with FINs; when false, TCP
    /// flows are mid-stream data only.
    pub handshakes: bool,
    /// Frame sizes.
    pub size: FrameSize,
    /// Client addresses: this many, counting up from `client_base`.
    pub clients: u32,
    /// First client address (IPv4; IPv6 clients use fd00::/64 + the same offset).
    pub client_base: [u8; 4],
    /// Server addresses.
    pub servers: u32,
    /// First server address.
    pub server_base: [u8; 4],
    /// Destination ports servers listen on (TCP and UDP pick from these).
    pub server_ports: Vec<u16>,
    /// Capture time of the first frame (ns since the epoch).
    pub start_ns: u64,
    /// Time between frames (ns).
    pub gap_ns: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 1,
            flows: 1000,
            packets: 20_000,
            zipf_s: 1.0,
            ipv6_share: 0.2,
            vlan_share: 0.1,
            udp_share: 0.25,
            icmp_share: 0.05,
            malformed_share: 0.01,
            handshakes: true,
            size: FrameSize::Min,
            clients: 250,
            client_base: [10, 1, 0, 1],
            servers: 16,
            server_base: [10, 2, 0, 1],
            server_ports: vec![80, 443, 53, 6379, 5432, 8080],
            start_ns: 1_700_000_000_000_000_000,
            gap_ns: 1_000,
        }
    }
}

/// Protocol of a generated flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP / ICMPv6 echo.
    Icmp,
}

/// One generated flow (the ground truth tests can check against).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenFlow {
    /// Client (initiator) address.
    pub client: IpAddr,
    /// Server address.
    pub server: IpAddr,
    /// Client port (ICMP: echo id).
    pub sport: u16,
    /// Server port (ICMP: 0).
    pub dport: u16,
    /// Protocol.
    pub proto: GenProto,
    /// 802.1Q VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// Frames of this flow in the capture (malformed replacements not counted).
    pub packets: usize,
}

/// The generated capture plus its ground truth.
#[derive(Clone, Debug, Default)]
pub struct Generated {
    /// The frames.
    pub frames: Frames,
    /// The flows, most popular first.
    pub flows: Vec<GenFlow>,
    /// Frames replaced by malformed ones.
    pub malformed: usize,
}

fn addr(base: [u8; 4], offset: u32, v6: bool) -> IpAddr {
    let v4 = u32::from_be_bytes(base).wrapping_add(offset);
    if v6 {
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[12..].copy_from_slice(&v4.to_be_bytes());
        IpAddr::V6(b.into())
    } else {
        IpAddr::V4(v4.into())
    }
}

/// One packet of a flow, before it becomes bytes.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// TCP segment from client (`fwd`) or server with these flags.
    Tcp { fwd: bool, flags: u8 },
    /// UDP datagram.
    Udp { fwd: bool },
    /// ICMP echo request (`fwd`) or reply.
    Echo { fwd: bool, seq: u16 },
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;

fn script(f: &GenFlow, handshakes: bool) -> Vec<Step> {
    let n = f.packets;
    let mut s = Vec::with_capacity(n);
    match f.proto {
        GenProto::Tcp if handshakes => {
            s.push(Step::Tcp {
                fwd: true,
                flags: SYN,
            });
            s.push(Step::Tcp {
                fwd: false,
                flags: SYN | ACK,
            });
            s.push(Step::Tcp {
                fwd: true,
                flags: ACK,
            });
            let data = n.saturating_sub(6);
            for i in 0..data {
                s.push(Step::Tcp {
                    fwd: i % 2 == 0,
                    flags: ACK | PSH,
                });
            }
            s.push(Step::Tcp {
                fwd: true,
                flags: FIN | ACK,
            });
            s.push(Step::Tcp {
                fwd: false,
                flags: FIN | ACK,
            });
            s.push(Step::Tcp {
                fwd: true,
                flags: ACK,
            });
        }
        GenProto::Tcp => {
            for i in 0..n {
                s.push(Step::Tcp {
                    fwd: i % 2 == 0,
                    flags: ACK | PSH,
                });
            }
        }
        GenProto::Udp => {
            for i in 0..n {
                s.push(Step::Udp { fwd: i % 2 == 0 });
            }
        }
        GenProto::Icmp => {
            for i in 0..n {
                s.push(Step::Echo {
                    fwd: i % 2 == 0,
                    seq: (i / 2) as u16,
                });
            }
        }
    }
    s
}

const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_S: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn wire_size(size: FrameSize, rng: &mut Rng) -> usize {
    match size {
        FrameSize::Min => 64,
        FrameSize::Fixed(n) => usize::from(n),
        FrameSize::Imix => match rng.below(12) {
            0..=6 => 64,
            7..=10 => 576,
            _ => 1500,
        },
    }
}

fn ip_headers(src: IpAddr, dst: IpAddr, proto: IpNumber) -> Option<IpHeaders> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(IpHeaders::Ipv4(
            Ipv4Header::new(0, 64, proto, s.octets(), d.octets()).ok()?,
            Default::default(),
        )),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(IpHeaders::Ipv6(
            Ipv6Header {
                next_header: proto,
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
                ..Default::default()
            },
            Default::default(),
        )),
        _ => None,
    }
}

/// Builds one frame. `wire` is the target size on the wire including the 4-byte
/// FCS (which captures do not contain); the frame is padded or given a payload to
/// reach it when the headers are smaller.
fn build(f: &GenFlow, step: Step, wire: usize) -> Vec<u8> {
    let (fwd, proto) = match step {
        Step::Tcp { fwd, .. } => (fwd, IpNumber::TCP),
        Step::Udp { fwd } => (fwd, IpNumber::UDP),
        Step::Echo { fwd, .. } => (
            fwd,
            if f.client.is_ipv4() {
                IpNumber::ICMP
            } else {
                IpNumber::IPV6_ICMP
            },
        ),
    };
    let (src, dst, sp, dp, smac, dmac) = if fwd {
        (f.client, f.server, f.sport, f.dport, MAC_C, MAC_S)
    } else {
        (f.server, f.client, f.dport, f.sport, MAC_S, MAC_C)
    };
    let Some(ip) = ip_headers(src, dst, proto) else {
        return Vec::new();
    };
    let target = wire
        .saturating_sub(4)
        .saturating_sub(if f.vlan.is_some() { 4 } else { 0 });
    let eth_ip = PacketBuilder::ethernet2(smac, dmac).ip(ip);
    let mut out = Vec::with_capacity(target.max(64));
    let result = match step {
        Step::Tcp { flags, .. } => {
            let mut b = eth_ip.tcp(sp, dp, 1000, 64_240);
            if flags & SYN != 0 {
                b = b.syn();
            }
            if flags & ACK != 0 {
                b = b.ack(1);
            }
            if flags & FIN != 0 {
                b = b.fin();
            }
            if flags & PSH != 0 {
                b = b.psh();
            }
            let payload = vec![0u8; target.saturating_sub(b.size(0))];
            b.write(&mut out, &payload)
        }
        Step::Udp { .. } => {
            let b = eth_ip.udp(sp, dp);
            let payload = vec![0u8; target.saturating_sub(b.size(0))];
            b.write(&mut out, &payload)
        }
        Step::Echo { fwd, seq } => {
            let id = f.sport;
            if f.client.is_ipv4() {
                let b = if fwd {
                    eth_ip.icmpv4_echo_request(id, seq)
                } else {
                    eth_ip.icmpv4_echo_reply(id, seq)
                };
                let payload = vec![0u8; target.saturating_sub(b.size(0))];
                b.write(&mut out, &payload)
            } else {
                let b = if fwd {
                    eth_ip.icmpv6_echo_request(id, seq)
                } else {
                    eth_ip.icmpv6_echo_reply(id, seq)
                };
                let payload = vec![0u8; target.saturating_sub(b.size(0))];
                b.write(&mut out, &payload)
            }
        }
    };
    if result.is_err() {
        return Vec::new();
    }
    if let Some(vid) = f.vlan {
        let mut tagged = Vec::with_capacity(out.len() + 4);
        tagged.extend_from_slice(&out[..12]);
        tagged.extend_from_slice(&0x8100u16.to_be_bytes());
        tagged.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        tagged.extend_from_slice(&out[12..]);
        out = tagged;
    }
    // Ethernet minimum: 60 bytes before the FCS.
    if out.len() < 60 {
        out.resize(60, 0);
    }
    out
}

/// Corrupts a valid frame so it no longer parses (or is not IP).
fn malform(frame: &mut Vec<u8>, rng: &mut Rng) {
    let l3 = if frame.len() > 14 && frame[12..14] == [0x81, 0x00] {
        18
    } else {
        14
    };
    match rng.below(4) {
        // Not IP: ARP ethertype.
        0 => {
            if frame.len() >= l3 {
                frame[l3 - 2..l3].copy_from_slice(&0x0806u16.to_be_bytes());
            }
        }
        // Cut inside the IP header.
        1 => frame.truncate(l3 + 10),
        // Bogus IP version nibble.
        2 => {
            if let Some(b) = frame.get_mut(l3) {
                *b = 0x25;
            }
        }
        // Cut right after the IP header, inside the transport header.
        _ => {
            let ihl = frame.get(l3).map_or(40, |b| {
                if b >> 4 == 4 {
                    usize::from(b & 0x0f) * 4
                } else {
                    40
                }
            });
            frame.truncate(l3 + ihl + 2);
        }
    }
}

/// Generates a capture (see the module docs). Deterministic in `cfg`.
pub fn generate(cfg: &GenConfig) -> Generated {
    let mut rng = Rng::new(cfg.seed);
    let nflows = cfg.flows.max(1);
    let min_pkts = |p: GenProto| match (p, cfg.handshakes) {
        (GenProto::Tcp, true) => 6,
        (GenProto::Tcp, false) => 1,
        _ => 2,
    };
    // Zipf weights and the flows themselves.
    let weights: Vec<f64> = (0..nflows)
        .map(|i| 1.0 / ((i + 1) as f64).powf(cfg.zipf_s.max(0.0)))
        .collect();
    let wsum: f64 = weights.iter().sum();
    let mut flows = Vec::with_capacity(nflows);
    for (i, w) in weights.iter().enumerate() {
        let v6 = rng.chance(cfg.ipv6_share);
        let r = rng.unit();
        let proto = if r < cfg.icmp_share {
            GenProto::Icmp
        } else if r < cfg.icmp_share + cfg.udp_share {
            GenProto::Udp
        } else {
            GenProto::Tcp
        };
        let client = addr(
            cfg.client_base,
            rng.below(u64::from(cfg.clients.max(1))) as u32,
            v6,
        );
        let server = addr(
            cfg.server_base,
            rng.below(u64::from(cfg.servers.max(1))) as u32,
            v6,
        );
        // Unique per flow: the client port encodes the flow index.
        let sport = 1024 + (i % 64_000) as u16;
        let dport = match proto {
            GenProto::Icmp => 0,
            _ => cfg
                .server_ports
                .get(rng.below(cfg.server_ports.len() as u64) as usize)
                .copied()
                .unwrap_or(80),
        };
        let vlan = rng
            .chance(cfg.vlan_share)
            .then(|| 100 + rng.below(10) as u16);
        let share = (cfg.packets as f64 * w / wsum).round() as usize;
        flows.push(GenFlow {
            client,
            server,
            sport,
            dport,
            proto,
            vlan,
            packets: share.max(min_pkts(proto)),
        });
    }
    // Interleave the flows' scripts: pick the next flow weighted by what it has left.
    let scripts: Vec<Vec<Step>> = flows.iter().map(|f| script(f, cfg.handshakes)).collect();
    let mut pos = vec![0usize; nflows];
    let mut remaining: Vec<usize> = scripts.iter().map(Vec::len).collect();
    let total: usize = remaining.iter().sum();
    // A Fenwick tree over remaining counts gives O(log n) weighted picks.
    let mut fen = Fenwick::new(&remaining);
    let mut out = Generated {
        frames: Frames::new(),
        flows: Vec::new(),
        malformed: 0,
    };
    let mut ts = cfg.start_ns;
    for _ in 0..total {
        let left = fen.total();
        if left == 0 {
            break;
        }
        let k = fen.find(rng.below(left as u64) as usize);
        let step = scripts[k][pos[k]];
        pos[k] += 1;
        remaining[k] -= 1;
        fen.add(k, -1);
        let wire = wire_size(cfg.size, &mut rng);
        let mut frame = build(&flows[k], step, wire);
        if rng.chance(cfg.malformed_share) {
            malform(&mut frame, &mut rng);
            out.malformed += 1;
            flows[k].packets -= 1;
        }
        out.frames.push(FrameRef {
            ts_ns: ts,
            orig_len: frame.len() as u32,
            data: &frame,
        });
        ts += cfg.gap_ns;
    }
    out.flows = flows;
    out
}

/// Fenwick (binary indexed) tree of non-negative counts.
struct Fenwick(Vec<i64>);

impl Fenwick {
    fn new(counts: &[usize]) -> Self {
        let mut f = Fenwick(vec![0; counts.len() + 1]);
        for (i, &c) in counts.iter().enumerate() {
            f.add(i, c as i64);
        }
        f
    }

    fn add(&mut self, i: usize, d: i64) {
        let mut i = i + 1;
        while i < self.0.len() {
            self.0[i] += d;
            i += i & i.wrapping_neg();
        }
    }

    fn total(&self) -> usize {
        let mut i = self.0.len() - 1;
        let mut s = 0;
        while i > 0 {
            s += self.0[i];
            i -= i & i.wrapping_neg();
        }
        s.max(0) as usize
    }

    /// The index whose cumulative range contains `target` (0-based, < total).
    fn find(&self, mut target: usize) -> usize {
        let n = self.0.len() - 1;
        let mut pos = 0;
        let mut step = n.next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next <= n && (self.0[next] as usize) <= target {
                pos = next;
                target -= self.0[next] as usize;
            }
            step >>= 1;
        }
        pos.min(n.saturating_sub(1))
    }
}

/// A 5-tuple of a ClassBench trace line (IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceTuple {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

impl From<&crate::classbench::Header> for TraceTuple {
    fn from(h: &crate::classbench::Header) -> Self {
        TraceTuple {
            src: h.src,
            dst: h.dst,
            sport: h.sport,
            dport: h.dport,
            proto: h.proto,
        }
    }
}

/// One minimum-size Ethernet frame per tuple (TCP with ACK, UDP, ICMP echo with the
/// ports as id, or a bare IP header for other protocols), timestamps `gap_ns` apart.
pub fn tuples_to_frames(tuples: &[TraceTuple], start_ns: u64, gap_ns: u64) -> Frames {
    let mut frames = Frames::new();
    let mut ts = start_ns;
    for t in tuples {
        let mut out = Vec::with_capacity(64);
        let ip = ip_headers(
            IpAddr::V4(t.src.into()),
            IpAddr::V4(t.dst.into()),
            IpNumber(t.proto),
        );
        if let Some(ip) = ip {
            let eth_ip = PacketBuilder::ethernet2(MAC_C, MAC_S).ip(ip);
            let r = match t.proto {
                6 => eth_ip
                    .tcp(t.sport, t.dport, 1, 1000)
                    .ack(1)
                    .write(&mut out, &[]),
                17 => eth_ip.udp(t.sport, t.dport).write(&mut out, &[]),
                1 => eth_ip.icmpv4_echo_request(t.sport, 0).write(&mut out, &[]),
                _ => eth_ip.write(&mut out, IpNumber(t.proto), &[0u8; 8]),
            };
            if r.is_err() {
                out.clear();
            }
        }
        if out.len() < 60 {
            out.resize(60, 0);
        }
        frames.push(FrameRef {
            ts_ns: ts,
            orig_len: out.len() as u32,
            data: &out,
        });
        ts += gap_ns;
    }
    frames
}

/// Frames for an explicit list of flows (a scenario rather than a random mix): each
/// flow's script as [`generate`] writes it (TCP handshake/data/teardown when
/// `handshakes`, UDP and ICMP echo request/response pairs), the flows interleaved
/// round-robin one frame at a time, timestamps `gap_ns` apart from `start_ns`.
/// Deterministic; flows whose addresses mix families produce no frames.
pub fn flows_to_frames(
    flows: &[GenFlow],
    handshakes: bool,
    size: FrameSize,
    start_ns: u64,
    gap_ns: u64,
) -> Frames {
    let scripts: Vec<Vec<Step>> = flows
        .iter()
        .map(|f| {
            if f.client.is_ipv4() == f.server.is_ipv4() {
                script(f, handshakes)
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut rng = Rng::new(start_ns ^ gap_ns);
    let mut frames = Frames::new();
    let mut ts = start_ns;
    let longest = scripts.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for (f, s) in flows.iter().zip(&scripts) {
            if let Some(&step) = s.get(i) {
                let frame = build(f, step, wire_size(size, &mut rng));
                frames.push(FrameRef {
                    ts_ns: ts,
                    orig_len: frame.len() as u32,
                    data: &frame,
                });
                ts += gap_ns;
            }
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let c = GenConfig {
            flows: 50,
            packets: 500,
            ..Default::default()
        };
        let a = generate(&c);
        let b = generate(&c);
        assert_eq!(a.frames, b.frames);
        let d = generate(&GenConfig { seed: 2, ..c });
        assert_ne!(a.frames, d.frames);
    }

    #[test]
    fn sizes_and_counts() {
        let c = GenConfig {
            flows: 100,
            packets: 3000,
            malformed_share: 0.0,
            ipv6_share: 0.0,
            vlan_share: 0.0,
            ..Default::default()
        };
        let g = generate(&c);
        assert_eq!(
            g.frames.len(),
            g.flows.iter().map(|f| f.packets).sum::<usize>()
        );
        assert!(
            g.frames.iter().all(|f| f.data.len() == 60),
            "64-byte frames"
        );
        // Zipf: the most popular flow carries far more than the median one.
        assert!(g.flows[0].packets > 10 * g.flows[50].packets);
        let imix = generate(&GenConfig {
            size: FrameSize::Imix,
            ..c
        });
        assert!(imix.frames.iter().any(|f| f.data.len() == 1496));
        assert!(imix.frames.iter().any(|f| f.data.len() == 572));
    }

    #[test]
    fn fenwick_picks_by_weight() {
        let f = Fenwick::new(&[0, 3, 0, 2]);
        assert_eq!(f.total(), 5);
        let picks: Vec<usize> = (0..5).map(|t| f.find(t)).collect();
        assert_eq!(picks, vec![1, 1, 1, 3, 3]);
    }

    #[test]
    fn trace_tuples_become_frames() {
        let t = [
            TraceTuple {
                src: 1,
                dst: 2,
                sport: 3,
                dport: 4,
                proto: 6,
            },
            TraceTuple {
                src: 1,
                dst: 2,
                sport: 3,
                dport: 4,
                proto: 17,
            },
            TraceTuple {
                src: 1,
                dst: 2,
                sport: 0,
                dport: 0,
                proto: 47,
            },
        ];
        let f = tuples_to_frames(&t, 0, 10);
        assert_eq!(f.len(), 3);
        assert!(f.iter().all(|x| x.data.len() >= 60));
        assert_eq!(f.get(1).map(|x| x.ts_ns), Some(10));
    }

    #[test]
    fn scenario_flows_become_complete_interleaved_conversations() {
        let flows = [
            GenFlow {
                client: "10.0.1.10".parse().unwrap(),
                server: "10.0.1.20".parse().unwrap(),
                sport: 40000,
                dport: 6379,
                proto: GenProto::Tcp,
                vlan: None,
                packets: 8,
            },
            GenFlow {
                client: "fd00::1".parse().unwrap(),
                server: "fd00::2".parse().unwrap(),
                sport: 40001,
                dport: 53,
                proto: GenProto::Udp,
                vlan: Some(7),
                packets: 2,
            },
            GenFlow {
                client: "10.0.0.1".parse().unwrap(),
                server: "fd00::2".parse().unwrap(),
                sport: 1,
                dport: 2,
                proto: GenProto::Udp,
                vlan: None,
                packets: 2,
            },
        ];
        let frames = flows_to_frames(&flows, true, FrameSize::Min, 1_000, 10);
        assert_eq!(
            frames.len(),
            10,
            "8 TCP + 2 UDP; the mixed-family flow is skipped"
        );
        let ts: Vec<u64> = frames.iter().map(|f| f.ts_ns).collect();
        assert_eq!(ts[0], 1_000);
        assert!(ts.windows(2).all(|w| w[1] == w[0] + 10));
        // Round-robin: TCP SYN first, then the first UDP datagram.
        let second = frames.get(1).unwrap();
        assert_eq!(
            &second.data[12..14],
            &[0x81, 0x00],
            "VLAN-tagged UDP frame second"
        );
        assert_eq!(
            flows_to_frames(&flows, true, FrameSize::Min, 1_000, 10).len(),
            10
        );
    }
}
