//! The embedded default: the seed example policies (`examples/seed/`) and a capture of
//! traffic between the seed's endpoints, built in memory, so that `tiergate replay`
//! with no arguments shows the staged policies at work.
//!
//! The traffic exercises every verdict the seed can produce (see
//! `examples/seed/README.md` for the addresses): frontend → database:6379 (denied
//! now, allowed by the staged `default.allow-tcp-6379`), frontend → database:5432
//! (denied in both views), backend → database:5432 (allowed in both), the staged
//! Kubernetes policy on `db` from each of its peers (incl. the ipBlock's `except`
//! range, which it would newly deny), and `db`'s egress.

use std::net::IpAddr;

use pcap::capture::Frames;
use pcap::synth::{FrameSize, GenFlow, GenProto, flows_to_frames};

/// The seed example files, as shipped in `examples/seed/`.
pub const SEED_POLICY_FILES: [(&str, &str); 6] = [
    (
        "examples/seed/00-namespaces.yaml",
        include_str!("../../../examples/seed/00-namespaces.yaml"),
    ),
    (
        "examples/seed/10-workloads.yaml",
        include_str!("../../../examples/seed/10-workloads.yaml"),
    ),
    (
        "examples/seed/20-enforced.yaml",
        include_str!("../../../examples/seed/20-enforced.yaml"),
    ),
    (
        "examples/seed/30-staged-global-network-policy.yaml",
        include_str!("../../../examples/seed/30-staged-global-network-policy.yaml"),
    ),
    (
        "examples/seed/31-staged-network-policy.yaml",
        include_str!("../../../examples/seed/31-staged-network-policy.yaml"),
    ),
    (
        "examples/seed/32-staged-kubernetes-network-policy.yaml",
        include_str!("../../../examples/seed/32-staged-kubernetes-network-policy.yaml"),
    ),
];

/// Capture time of the first frame of the seed capture (2026-01-01T00:00:00Z).
pub const SEED_START_NS: u64 = 1_767_225_600_000_000_000;

fn ip(s: &str) -> IpAddr {
    // The literals below are valid addresses; a typo is caught by the tests.
    s.parse()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// One conversation of the seed capture.
fn flow(
    client: &str,
    server: &str,
    proto: GenProto,
    sport: u16,
    dport: u16,
    packets: usize,
) -> GenFlow {
    GenFlow {
        client: ip(client),
        server: ip(server),
        sport,
        dport,
        proto,
        vlan: None,
        packets,
    }
}

/// The conversations of the seed capture.
pub fn seed_flows() -> Vec<GenFlow> {
    use GenProto::{Icmp, Tcp, Udp};
    const FRONTEND: &str = "10.0.1.10";
    const BACKEND: &str = "10.0.1.11";
    const DATABASE: &str = "10.0.1.20";
    const DB: &str = "10.0.1.30";
    const CLIENT: &str = "10.0.2.10";
    let mut flows = Vec::new();
    // frontend → database:6379: three connections, denied now, allowed once staged.
    for i in 0..3 {
        flows.push(flow(FRONTEND, DATABASE, Tcp, 40000 + i, 6379, 12));
    }
    // frontend → database:5432: denied either way (end of tier).
    flows.push(flow(FRONTEND, DATABASE, Tcp, 40010, 5432, 6));
    // backend → database:5432: allowed either way.
    for i in 0..2 {
        flows.push(flow(BACKEND, DATABASE, Tcp, 41000 + i, 5432, 20));
    }
    // The staged Kubernetes policy on db, from each of its peers.
    flows.push(flow(FRONTEND, DB, Tcp, 42000, 6379, 10));
    flows.push(flow(CLIENT, DB, Tcp, 42001, 6379, 10));
    flows.push(flow("172.17.0.5", DB, Tcp, 42002, 6379, 10));
    flows.push(flow("172.17.1.5", DB, Tcp, 42003, 6379, 10));
    // db's egress: 5978 stays allowed, 443 would be newly denied.
    flows.push(flow(DB, "10.0.0.7", Tcp, 43000, 5978, 8));
    flows.push(flow(DB, "10.0.0.7", Tcp, 43001, 443, 8));
    // UDP and ICMP from the frontend.
    flows.push(flow(FRONTEND, "10.0.0.53", Udp, 44000, 53, 2));
    flows.push(flow(FRONTEND, DATABASE, Icmp, 7, 0, 4));
    flows
}

/// The seed capture: [`seed_flows`] with TCP handshakes and teardowns, minimum-size
/// frames, 1 ms apart.
pub fn seed_capture() -> Frames {
    flows_to_frames(
        &seed_flows(),
        true,
        FrameSize::Min,
        SEED_START_NS,
        1_000_000,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_flows_are_well_formed() {
        for f in seed_flows() {
            assert!(
                !f.client.is_unspecified() && !f.server.is_unspecified(),
                "{f:?}"
            );
        }
        let frames = seed_capture();
        let expected: usize = seed_flows().iter().map(|f| f.packets).sum();
        assert_eq!(frames.len(), expected);
    }

    #[test]
    fn embedded_seed_policies_load() {
        let mut all = Vec::new();
        for (name, text) in SEED_POLICY_FILES {
            all.extend(crate::model::load_str(text, name).expect(name));
        }
        assert!(all.len() >= 6);
    }
}
