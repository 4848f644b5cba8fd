//! The ends of a flow as every report names them: which end reports ([`Reporter`]), what
//! kind of end it is and its aggregated name ([`EndpointMeta`]), and `allow`/`deny` as
//! written ([`VerdictName`]). The evaluator, the lowering, flow logs and the impact
//! report share these.

use std::net::IpAddr;

use dataplane::program::Verdict;
use serde::Serialize;

/// Which end's verdict a record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reporter {
    /// The source endpoint's egress verdict.
    Src,
    /// The destination endpoint's ingress verdict.
    Dst,
}

/// The type of a flow end, with felix's flow-log spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum EndpointType {
    /// A workload endpoint (pod).
    #[serde(rename = "wep")]
    Workload,
    /// A host endpoint.
    #[serde(rename = "hep")]
    Host,
    /// A network set (or global network set) containing the address.
    #[serde(rename = "ns")]
    NetworkSet,
    /// Any other address (`pub` or `pvt`).
    #[serde(rename = "net")]
    Network,
}

/// A flow end as it appears in flow logs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointMeta {
    /// Endpoint type.
    pub kind: EndpointType,
    /// Aggregated name: a pod's `generateName` + `*` (or its name), a host endpoint's
    /// name, a network set's name, or `pub`/`pvt` for other addresses.
    pub name: String,
    /// Namespace, or `-` for cluster-scoped ends and plain networks.
    pub namespace: String,
    /// Labels as sorted `key=value` strings.
    pub labels: Vec<String>,
}

impl EndpointMeta {
    /// A plain network end: `pvt` for RFC 1918 IPv4 addresses, `pub` otherwise (felix
    /// classifies only those three IPv4 blocks as private).
    pub fn network(ip: IpAddr) -> EndpointMeta {
        let private = match ip {
            IpAddr::V4(a) => {
                let o = a.octets();
                o[0] == 10
                    || (o[0] == 172 && (16..32).contains(&o[1]))
                    || (o[0] == 192 && o[1] == 168)
            }
            IpAddr::V6(_) => false,
        };
        EndpointMeta {
            kind: EndpointType::Network,
            name: if private { "pvt" } else { "pub" }.to_string(),
            namespace: "-".to_string(),
            labels: Vec::new(),
        }
    }
}

/// `allow` / `deny` as written in flow logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictName {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

impl From<Verdict> for VerdictName {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Allow => VerdictName::Allow,
            Verdict::Deny => VerdictName::Deny,
        }
    }
}
