//! Serde types of the resources tiergate understands, as users write them.
//!
//! Field names follow the Calico `projectcalico.org/v3`, `networking.k8s.io/v1` and
//! `v1` APIs exactly (camelCase on the wire). Unknown fields are rejected. Values that
//! need checking beyond their type (selectors, names, list limits, protocol/port
//! consistency) are checked by `model::validate`; defaults (tier `default`, `types`
//! inference) are applied by `model::defaults`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

// ---------------------------------------------------------------------------------
// Kinds

/// Every resource kind tiergate accepts, with its API group/version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// `projectcalico.org/v3` NetworkPolicy (namespaced).
    NetworkPolicy,
    /// `projectcalico.org/v3` GlobalNetworkPolicy.
    GlobalNetworkPolicy,
    /// `projectcalico.org/v3` StagedNetworkPolicy (namespaced).
    StagedNetworkPolicy,
    /// `projectcalico.org/v3` StagedGlobalNetworkPolicy.
    StagedGlobalNetworkPolicy,
    /// `projectcalico.org/v3` StagedKubernetesNetworkPolicy (namespaced).
    StagedKubernetesNetworkPolicy,
    /// `networking.k8s.io/v1` NetworkPolicy (namespaced).
    KubernetesNetworkPolicy,
    /// `projectcalico.org/v3` Tier.
    Tier,
    /// `projectcalico.org/v3` NetworkSet (namespaced).
    NetworkSet,
    /// `projectcalico.org/v3` GlobalNetworkSet.
    GlobalNetworkSet,
    /// `projectcalico.org/v3` HostEndpoint.
    HostEndpoint,
    /// `projectcalico.org/v3` WorkloadEndpoint (namespaced).
    WorkloadEndpoint,
    /// `projectcalico.org/v3` Profile.
    Profile,
    /// `v1` Namespace.
    Namespace,
}

/// API group/version of Calico resources.
pub const CALICO_API: &str = "projectcalico.org/v3";
/// API group/version of Kubernetes network policies.
pub const K8S_NETWORKING_API: &str = "networking.k8s.io/v1";
/// API group/version of core Kubernetes resources.
pub const K8S_CORE_API: &str = "v1";

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 13] = [
        Kind::NetworkPolicy,
        Kind::GlobalNetworkPolicy,
        Kind::StagedNetworkPolicy,
        Kind::StagedGlobalNetworkPolicy,
        Kind::StagedKubernetesNetworkPolicy,
        Kind::KubernetesNetworkPolicy,
        Kind::Tier,
        Kind::NetworkSet,
        Kind::GlobalNetworkSet,
        Kind::HostEndpoint,
        Kind::WorkloadEndpoint,
        Kind::Profile,
        Kind::Namespace,
    ];

    /// The `kind:` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NetworkPolicy | Kind::KubernetesNetworkPolicy => "NetworkPolicy",
            Kind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            Kind::StagedNetworkPolicy => "StagedNetworkPolicy",
            Kind::StagedGlobalNetworkPolicy => "StagedGlobalNetworkPolicy",
            Kind::StagedKubernetesNetworkPolicy => "StagedKubernetesNetworkPolicy",
            Kind::Tier => "Tier",
            Kind::NetworkSet => "NetworkSet",
            Kind::GlobalNetworkSet => "GlobalNetworkSet",
            Kind::HostEndpoint => "HostEndpoint",
            Kind::WorkloadEndpoint => "WorkloadEndpoint",
            Kind::Profile => "Profile",
            Kind::Namespace => "Namespace",
        }
    }

    /// The `apiVersion:` string on the wire.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::KubernetesNetworkPolicy => K8S_NETWORKING_API,
            Kind::Namespace => K8S_CORE_API,
            _ => CALICO_API,
        }
    }

    /// Finds the kind for an `apiVersion`/`kind` pair.
    pub fn from_wire(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.as_str() == kind)
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        matches!(
            self,
            Kind::NetworkPolicy
                | Kind::StagedNetworkPolicy
                | Kind::StagedKubernetesNetworkPolicy
                | Kind::KubernetesNetworkPolicy
                | Kind::NetworkSet
                | Kind::WorkloadEndpoint
        )
    }

    /// Whether this is one of the staged policy kinds.
    pub fn is_staged(self) -> bool {
        matches!(
            self,
            Kind::StagedNetworkPolicy
                | Kind::StagedGlobalNetworkPolicy
                | Kind::StagedKubernetesNetworkPolicy
        )
    }

    /// Whether this is a policy kind (enforced or staged, Calico or Kubernetes).
    pub fn is_policy(self) -> bool {
        matches!(
            self,
            Kind::NetworkPolicy
                | Kind::GlobalNetworkPolicy
                | Kind::StagedNetworkPolicy
                | Kind::StagedGlobalNetworkPolicy
                | Kind::StagedKubernetesNetworkPolicy
                | Kind::KubernetesNetworkPolicy
        )
    }

    /// The short kind used in Calico hit strings (`np`, `gnp`, `snp`, `sgnp`, `sknp`,
    /// `knp`, `pro`), for the kinds that appear in traces.
    pub fn hit_short(self) -> Option<&'static str> {
        Some(match self {
            Kind::NetworkPolicy => "np",
            Kind::GlobalNetworkPolicy => "gnp",
            Kind::StagedNetworkPolicy => "snp",
            Kind::StagedGlobalNetworkPolicy => "sgnp",
            Kind::StagedKubernetesNetworkPolicy => "sknp",
            Kind::KubernetesNetworkPolicy => "knp",
            Kind::Profile => "pro",
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::KubernetesNetworkPolicy => f.write_str("NetworkPolicy (networking.k8s.io/v1)"),
            k => f.write_str(k.as_str()),
        }
    }
}

// ---------------------------------------------------------------------------------
// Metadata

/// Object metadata. Kubernetes bookkeeping fields are accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// Namespace, for namespaced kinds (defaults to `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations (informational).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Ignored bookkeeping.
    #[serde(default, skip_serializing)]
    pub uid: Option<String>,
    /// Ignored bookkeeping.
    #[serde(default, skip_serializing)]
    pub resource_version: Option<String>,
    /// Ignored bookkeeping.
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Option<String>,
    /// Ignored bookkeeping.
    #[serde(default, skip_serializing)]
    pub generation: Option<i64>,
    /// Ignored bookkeeping.
    #[serde(default, skip_serializing)]
    pub generate_name: Option<String>,
    /// Ignored bookkeeping (present in `kubectl get -o yaml` output).
    #[serde(default, skip_serializing)]
    pub managed_fields: Option<de::IgnoredAny>,
    /// Ignored bookkeeping.
    #[serde(default, skip_serializing)]
    pub owner_references: Option<de::IgnoredAny>,
    /// Ignored bookkeeping.
    #[serde(default, skip_serializing)]
    pub finalizers: Option<de::IgnoredAny>,
    /// Ignored bookkeeping.
    #[serde(default, skip_serializing)]
    pub self_link: Option<de::IgnoredAny>,
    /// Ignored bookkeeping.
    #[serde(default, skip_serializing)]
    pub deletion_timestamp: Option<de::IgnoredAny>,
    /// Ignored bookkeeping.
    #[serde(default, skip_serializing)]
    pub deletion_grace_period_seconds: Option<de::IgnoredAny>,
}

// ---------------------------------------------------------------------------------
// Scalars with flexible wire forms

/// A rule action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum RuleAction {
    /// Accept.
    Allow,
    /// Drop.
    Deny,
    /// Record and continue.
    Log,
    /// Go to the next tier.
    Pass,
}

/// A policy direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
pub enum PolicyType {
    /// Traffic to the endpoint.
    Ingress,
    /// Traffic from the endpoint.
    Egress,
}

/// A staged policy's proposal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum StagedAction {
    /// Proposes this policy (the default).
    #[default]
    Set,
    /// Proposes removing the enforced policy of the same name; spec must be empty.
    Delete,
    /// Listed by the CRD enum; not supported by tiergate: rejected by validation.
    Learn,
    /// Listed by the CRD enum; not supported by tiergate: rejected by validation.
    Ignore,
}

/// A tier's default action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum TierDefaultAction {
    /// End-of-tier drop.
    #[default]
    Deny,
    /// Continue to the next tier.
    Pass,
}

/// An IP protocol, by name or number. Names are matched case-insensitively and
/// printed canonically (`TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`, `UDPLite`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    /// Canonical names and numbers.
    pub const NAMES: [(&'static str, u8); 6] = [
        ("TCP", 6),
        ("UDP", 17),
        ("ICMP", 1),
        ("ICMPv6", 58),
        ("SCTP", 132),
        ("UDPLite", 136),
    ];

    /// Parses a protocol name (case-insensitive) or number 1–255.
    pub fn parse(s: &str) -> Option<Protocol> {
        if let Some((_, n)) = Self::NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            return Some(Protocol(*n));
        }
        match s.parse::<u8>() {
            Ok(n) if n >= 1 => Some(Protocol(n)),
            _ => None,
        }
    }

    /// The canonical name, if the protocol has one.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(s, _)| *s)
    }

    /// Whether rules on this protocol may use ports (TCP, UDP, SCTP).
    pub fn supports_ports(self) -> bool {
        matches!(self.0, 6 | 17 | 132)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(n) => s.serialize_str(n),
            None => s.serialize_u8(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a protocol name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite) or a number 1-255",
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                match u8::try_from(v) {
                    Ok(n) if n >= 1 => Ok(Protocol(n)),
                    _ => Err(E::custom(format_args!(
                        "invalid protocol {v}: expected a protocol name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite) or a number 1-255"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::custom(format_args!(
                        "invalid protocol {v}: expected a protocol name or a number 1-255"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                Protocol::parse(v).ok_or_else(|| {
                    E::custom(format_args!(
                        "invalid protocol {v:?}: expected TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A port in a rule: a number, a `"min:max"` range, or the name of a named port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Port {
    /// One port number (0–65535).
    Number(u16),
    /// An inclusive range `min:max` with `min <= max`.
    Range(u16, u16),
    /// A named port, resolved per endpoint.
    Named(String),
}

impl Port {
    /// Parses the string form as Calico's `numorstring.PortFromString` does: all digits
    /// is a number, `digits:digits` a range, anything else a port name (`[a-zA-Z0-9_.-]`,
    /// 1–128 chars; `validate` further requires an IANA service name).
    pub fn parse(s: &str) -> Result<Port, String> {
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if digits(s) {
            return s
                .parse::<u16>()
                .map(Port::Number)
                .map_err(|_| format!("invalid port {s}: expected 1-65535"));
        }
        if let Some((a, b)) = s.split_once(':')
            && digits(a)
            && digits(b)
        {
            let bad = || {
                format!(
                    "invalid port range {s:?}: expected \"min:max\" with 1 <= min <= max <= 65535"
                )
            };
            let lo: u16 = a.parse().map_err(|_| bad())?;
            let hi: u16 = b.parse().map_err(|_| bad())?;
            if lo > hi {
                return Err(format!(
                    "invalid port range {s:?}: min {lo} is greater than max {hi}"
                ));
            }
            return Ok(Port::Range(lo, hi));
        }
        let name_ok = (1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !name_ok {
            return Err(format!(
                "invalid port {s:?}: expected a number 1-65535, a range \"min:max\" or a port name"
            ));
        }
        Ok(Port::Named(s.to_string()))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Number(n) => write!(f, "{n}"),
            Port::Range(a, b) => write!(f, "{a}:{b}"),
            Port::Named(n) => f.write_str(n),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Number(n) => s.serialize_u16(*n),
            p => s.collect_str(p),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number 0-65535, a range \"min:max\" or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::Number)
                    .map_err(|_| E::custom(format_args!("invalid port {v}: expected 1-65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::Number)
                    .map_err(|_| E::custom(format_args!("invalid port {v}: expected 1-65535")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                Port::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A CIDR or a bare IP address (taken as a host prefix), as Calico accepts in `nets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net(pub ipnet::IpNet);

impl Net {
    /// Parses `a.b.c.d/len`, an IPv6 prefix, or a bare address. Host bits are kept
    /// as written (Calico masks them when matching; so does tiergate).
    pub fn parse(s: &str) -> Result<Net, String> {
        if let Ok(n) = s.parse::<ipnet::IpNet>() {
            return Ok(Net(n));
        }
        if let Ok(a) = s.parse::<std::net::IpAddr>() {
            return Ok(Net(ipnet::IpNet::from(a)));
        }
        Err(format!(
            "invalid CIDR {s:?}: expected an IPv4 or IPv6 prefix such as 10.0.0.0/8 or fd00::/64, or a bare address"
        ))
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Net::parse(&s).map_err(de::Error::custom)
    }
}

/// An int-or-string, as Kubernetes port fields are.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A string (a port name).
    String(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a port name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format_args!("invalid port {v}: expected 1-65535")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Deserializes a policy or tier `order`: a finite number. YAML's `.nan` and `.inf`, and
/// literals too large for a 64-bit float (`1e400`), reach here as strings (the loader
/// asks for them so) and are rejected naming the value.
fn deserialize_order<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a finite number")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.is_finite() {
                Ok(Some(v))
            } else {
                Err(E::custom(format!(
                    "order {v} is not a finite number: expected a number such as 100 or 2.5 (up to about 1.8e308)"
                )))
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            const EXPECTED: &str = "expected a finite number such as 100 or 2.5";
            Err(E::custom(match v {
                ".nan" | ".NaN" | ".NAN" => format!("invalid order {v:?} (NaN): {EXPECTED}"),
                ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf"
                | "-.INF" => format!(
                    "invalid order {v:?} (infinity, or a number beyond about 1.8e308): {EXPECTED}"
                ),
                _ => format!("invalid order {v:?}: {EXPECTED}, found a string"),
            }))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_option(V)
}

/// Deserializes an ICMP type or code (0-255), naming the field and the range when the
/// value is out of it.
fn deserialize_icmp_u8<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    range: &'static str,
) -> Result<Option<u8>, D::Error> {
    match Option::<i128>::deserialize(d) {
        Ok(None) => Ok(None),
        Ok(Some(v)) => u8::try_from(v)
            .map(Some)
            .map_err(|_| de::Error::custom(format!("invalid ICMP {what} {v}: expected {range}"))),
        Err(e) => Err(e),
    }
}

fn deserialize_icmp_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    deserialize_icmp_u8(d, "type", "0-254")
}

fn deserialize_icmp_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    deserialize_icmp_u8(d, "code", "0-255")
}

/// Deserializes a Kubernetes `ipBlock` CIDR: prefix notation is required (a bare address
/// is rejected, as the Kubernetes API server does).
fn deserialize_strict_cidr<'de, D: Deserializer<'de>>(d: D) -> Result<Net, D::Error> {
    let s = String::deserialize(d)?;
    parse_strict_cidr(&s).map_err(de::Error::custom)
}

fn deserialize_strict_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Net>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    let mut nets = Vec::with_capacity(v.len());
    let mut bad = Vec::new();
    for (i, s) in v.iter().enumerate() {
        match parse_strict_cidr(s) {
            Ok(n) => nets.push(n),
            Err(e) => bad.push(format!("[{i}] {e}")),
        }
    }
    // Every bad item, not only the first (the list is decoded as one value).
    if bad.is_empty() {
        Ok(nets)
    } else {
        Err(de::Error::custom(bad.join("; ")))
    }
}

fn parse_strict_cidr(s: &str) -> Result<Net, String> {
    s.parse::<ipnet::IpNet>().map(Net).map_err(|_| {
        format!("invalid CIDR {s:?}: expected a prefix such as 10.0.0.0/8 or fd00::/64")
    })
}

// ---------------------------------------------------------------------------------
// Calico rules

/// ICMP type/code criteria.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpFields {
    /// ICMP type (0–254).
    #[serde(
        default,
        rename = "type",
        deserialize_with = "deserialize_icmp_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub icmp_type: Option<u8>,
    /// ICMP code (0–255); requires a type.
    #[serde(
        default,
        deserialize_with = "deserialize_icmp_code",
        skip_serializing_if = "Option::is_none"
    )]
    pub code: Option<u8>,
}

/// Service-account criteria of an entity rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountMatch {
    /// Service account names (ORed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Selector over service-account labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// Kubernetes service criteria of an entity rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceMatch {
    /// Service name.
    #[serde(default)]
    pub name: String,
    /// Service namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The source or destination criteria of a rule. All present fields are ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityRule {
    /// Address in one of these prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<Net>,
    /// Address in none of these prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<Net>,
    /// Peer endpoint or network set matches this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Peer does not match this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_selector: Option<String>,
    /// Peer's namespace matches this selector (over namespace labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    /// Port in this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Port not in this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
    /// Peer runs as one of these service accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountMatch>,
    /// Peer is this Kubernetes service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceMatch>,
}

impl EntityRule {
    /// Whether no criterion is set.
    pub fn is_empty(&self) -> bool {
        *self == EntityRule::default()
    }
}

/// HTTP criteria (L7; accepted and validated, never matched at L3/L4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatch {
    /// HTTP methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Path matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<HttpPath>,
}

/// One HTTP path criterion.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPath {
    /// Exact path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Informational rule metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMetadata {
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One Calico rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// What the rule does.
    pub action: RuleAction,
    /// 4 or 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    /// Protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Not this protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    /// ICMP type/code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpFields>,
    /// Not this ICMP type/code.
    #[serde(default, rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpFields>,
    /// Source criteria.
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    /// Destination criteria.
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
    /// L7 criteria.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpMatch>,
    /// Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RuleMetadata>,
}

// ---------------------------------------------------------------------------------
// Calico policies

/// The spec of NetworkPolicy, GlobalNetworkPolicy, StagedNetworkPolicy and
/// StagedGlobalNetworkPolicy. Fields that only some kinds allow (namespaceSelector,
/// doNotTrack, preDNAT, applyOnForward: global kinds; stagedAction: staged kinds) are
/// rejected for the others by validation.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Tier name; empty or absent means `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Order; absent = after every ordered policy.
    #[serde(
        default,
        deserialize_with = "deserialize_order",
        skip_serializing_if = "Option::is_none"
    )]
    pub order: Option<f64>,
    /// Endpoints the policy applies to; absent/empty = `all()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Directions; absent = inferred from the rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<PolicyType>>,
    /// Ingress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    /// Egress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    /// Selector over the endpoint's service-account labels, ANDed with `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_selector: Option<String>,
    /// Only `AssumeNeededOnEveryNode`; never changes verdicts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
    /// Global kinds: selects namespaces of the endpoints the policy applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    /// Global kinds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_track: bool,
    /// Global kinds.
    #[serde(
        default,
        rename = "preDNAT",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub pre_dnat: bool,
    /// Global kinds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apply_on_forward: bool,
    /// Staged kinds: `Set` (default) or `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
}

// ---------------------------------------------------------------------------------
// Kubernetes network policies

/// A Kubernetes label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Exact label matches.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Expression matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: LabelSelectorOperator,
    /// Values (In/NotIn only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A `matchExpressions` operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum LabelSelectorOperator {
    /// Value in the list.
    In,
    /// Value not in the list.
    NotIn,
    /// Key present.
    Exists,
    /// Key absent.
    DoesNotExist,
}

/// An `ipBlock` peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IpBlock {
    /// The block (prefix notation required).
    #[serde(deserialize_with = "deserialize_strict_cidr")]
    pub cidr: Net,
    /// Holes in the block; each must be a strict subset of `cidr` (checked by validation).
    #[serde(
        default,
        deserialize_with = "deserialize_strict_cidrs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub except: Vec<Net>,
}

/// A peer of a Kubernetes rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sPeer {
    /// Pods (in the policy's namespace unless `namespaceSelector` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// A port of a Kubernetes rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sPort {
    /// TCP (default), UDP or SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Number or name; absent = all ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    /// End of a numeric range starting at `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
}

/// A Kubernetes ingress rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct K8sIngressRule {
    /// Ports; empty = all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<K8sPort>,
    /// Peers; empty = all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<K8sPeer>,
}

/// A Kubernetes egress rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct K8sEgressRule {
    /// Ports; empty = all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<K8sPort>,
    /// Peers; empty = all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<K8sPeer>,
}

/// The spec of a Kubernetes NetworkPolicy and of a StagedKubernetesNetworkPolicy
/// (which adds `stagedAction`; validation rejects it on the enforced kind).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sPolicySpec {
    /// Pods the policy applies to (in its namespace); `{}` = all.
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// Ingress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<K8sIngressRule>,
    /// Egress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<K8sEgressRule>,
    /// Directions; absent = Ingress (plus Egress if egress rules exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    /// Staged kind only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
}

// ---------------------------------------------------------------------------------
// Tiers, sets, endpoints, profiles, namespaces

/// Tier spec.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {
    /// Order; absent = last.
    #[serde(
        default,
        deserialize_with = "deserialize_order",
        skip_serializing_if = "Option::is_none"
    )]
    pub order: Option<f64>,
    /// Deny (default) or Pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<TierDefaultAction>,
}

/// NetworkSet / GlobalNetworkSet spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSetSpec {
    /// Member prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<Net>,
}

/// A named port of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    /// Port name.
    pub name: String,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// Port number.
    pub port: u16,
    /// Workload endpoints: host port (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// Workload endpoints: host IP (informational).
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// HostEndpoint spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEndpointSpec {
    /// Node name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Interface name; `*` = all interfaces of the node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    /// The host's addresses on that interface.
    #[serde(default, rename = "expectedIPs", skip_serializing_if = "Vec::is_empty")]
    pub expected_ips: Vec<std::net::IpAddr>,
    /// Profiles, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Named ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// WorkloadEndpoint spec (a pod's interface).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    /// Orchestrator (`k8s` for pods).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub orchestrator: String,
    /// Workload name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload: String,
    /// Node name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Pod name (k8s).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// Endpoint name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// Service account of the pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    /// Container id (informational).
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    /// The endpoint's addresses: single-address prefixes (/32 or /128).
    #[serde(default, rename = "ipNetworks", skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<Net>,
    /// 1:1 NAT mappings (informational; tiergate matches on `ipNetworks`).
    #[serde(default, rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    /// IPv4 gateway (informational).
    #[serde(
        default,
        rename = "ipv4Gateway",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_gateway: Option<std::net::Ipv4Addr>,
    /// IPv6 gateway (informational).
    #[serde(
        default,
        rename = "ipv6Gateway",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_gateway: Option<std::net::Ipv6Addr>,
    /// Source prefixes the workload may spoof (informational).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<Net>,
    /// QoS controls (informational).
    #[serde(
        default,
        rename = "qosControls",
        skip_serializing_if = "Option::is_none"
    )]
    pub qos_controls: Option<Box<QosControls>>,
    /// Interface name on the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    /// MAC address (informational).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Profiles, in order (k8s pods get `kns.<ns>` and `ksa.<ns>.<sa>` implicitly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Named ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// A 1:1 NAT mapping of a workload endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpNat {
    /// Address inside the workload.
    #[serde(rename = "internalIP")]
    pub internal_ip: std::net::IpAddr,
    /// Address outside.
    #[serde(rename = "externalIP")]
    pub external_ip: std::net::IpAddr,
}

/// Workload QoS controls (accepted and ignored: they never change policy verdicts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct QosControls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_bandwidth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_peakrate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_minburst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_bandwidth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_peakrate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_minburst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_packet_rate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_packet_burst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_packet_rate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_packet_burst: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dscp: Option<IntOrString>,
}

/// Profile spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {
    /// Ingress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    /// Egress rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    /// Labels inherited by endpoints that use the profile.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_to_apply: BTreeMap<String, String>,
}

/// Namespace spec (ignored; only metadata matters).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    /// Ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

// ---------------------------------------------------------------------------------
// Resources

/// A resource: metadata plus a kind-specific spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Object<S> {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: S,
}

/// One loaded resource of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    /// `projectcalico.org/v3` NetworkPolicy.
    NetworkPolicy(Object<PolicySpec>),
    /// GlobalNetworkPolicy.
    GlobalNetworkPolicy(Object<PolicySpec>),
    /// StagedNetworkPolicy.
    StagedNetworkPolicy(Object<PolicySpec>),
    /// StagedGlobalNetworkPolicy.
    StagedGlobalNetworkPolicy(Object<PolicySpec>),
    /// StagedKubernetesNetworkPolicy.
    StagedKubernetesNetworkPolicy(Object<K8sPolicySpec>),
    /// `networking.k8s.io/v1` NetworkPolicy.
    KubernetesNetworkPolicy(Object<K8sPolicySpec>),
    /// Tier.
    Tier(Object<TierSpec>),
    /// NetworkSet.
    NetworkSet(Object<NetworkSetSpec>),
    /// GlobalNetworkSet.
    GlobalNetworkSet(Object<NetworkSetSpec>),
    /// HostEndpoint.
    HostEndpoint(Object<HostEndpointSpec>),
    /// WorkloadEndpoint.
    WorkloadEndpoint(Object<WorkloadEndpointSpec>),
    /// Profile.
    Profile(Object<ProfileSpec>),
    /// `v1` Namespace.
    Namespace(Object<NamespaceSpec>),
}

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::NetworkPolicy(_) => Kind::NetworkPolicy,
            Resource::GlobalNetworkPolicy(_) => Kind::GlobalNetworkPolicy,
            Resource::StagedNetworkPolicy(_) => Kind::StagedNetworkPolicy,
            Resource::StagedGlobalNetworkPolicy(_) => Kind::StagedGlobalNetworkPolicy,
            Resource::StagedKubernetesNetworkPolicy(_) => Kind::StagedKubernetesNetworkPolicy,
            Resource::KubernetesNetworkPolicy(_) => Kind::KubernetesNetworkPolicy,
            Resource::Tier(_) => Kind::Tier,
            Resource::NetworkSet(_) => Kind::NetworkSet,
            Resource::GlobalNetworkSet(_) => Kind::GlobalNetworkSet,
            Resource::HostEndpoint(_) => Kind::HostEndpoint,
            Resource::WorkloadEndpoint(_) => Kind::WorkloadEndpoint,
            Resource::Profile(_) => Kind::Profile,
            Resource::Namespace(_) => Kind::Namespace,
        }
    }

    /// The resource's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::NetworkPolicy(o)
            | Resource::GlobalNetworkPolicy(o)
            | Resource::StagedNetworkPolicy(o)
            | Resource::StagedGlobalNetworkPolicy(o) => &o.metadata,
            Resource::StagedKubernetesNetworkPolicy(o) | Resource::KubernetesNetworkPolicy(o) => {
                &o.metadata
            }
            Resource::Tier(o) => &o.metadata,
            Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => &o.metadata,
            Resource::HostEndpoint(o) => &o.metadata,
            Resource::WorkloadEndpoint(o) => &o.metadata,
            Resource::Profile(o) => &o.metadata,
            Resource::Namespace(o) => &o.metadata,
        }
    }

    /// The resource's metadata, to change.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Resource::NetworkPolicy(o)
            | Resource::GlobalNetworkPolicy(o)
            | Resource::StagedNetworkPolicy(o)
            | Resource::StagedGlobalNetworkPolicy(o) => &mut o.metadata,
            Resource::StagedKubernetesNetworkPolicy(o) | Resource::KubernetesNetworkPolicy(o) => {
                &mut o.metadata
            }
            Resource::Tier(o) => &mut o.metadata,
            Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => &mut o.metadata,
            Resource::HostEndpoint(o) => &mut o.metadata,
            Resource::WorkloadEndpoint(o) => &mut o.metadata,
            Resource::Profile(o) => &mut o.metadata,
            Resource::Namespace(o) => &mut o.metadata,
        }
    }

    /// The store key: kind, namespace (namespaced kinds only), name.
    pub fn key(&self) -> ResourceKey {
        let m = self.metadata();
        ResourceKey {
            kind: self.kind(),
            namespace: if self.kind().is_namespaced() {
                m.namespace.clone()
            } else {
                None
            },
            name: m.name.clone(),
        }
    }
}

/// A resource serialises in its wire form (`apiVersion`, `kind`, `metadata`, `spec`), the
/// form the loader reads: loading what is written reproduces the resource (after the
/// defaults the loader applies anyway).
impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Doc<'a, T: Serialize> {
            api_version: &'static str,
            kind: &'static str,
            metadata: &'a ObjectMeta,
            spec: &'a T,
        }
        fn doc<T: Serialize, S: Serializer>(
            k: Kind,
            o: &Object<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            Doc {
                api_version: k.api_version(),
                kind: k.as_str(),
                metadata: &o.metadata,
                spec: &o.spec,
            }
            .serialize(s)
        }
        let k = self.kind();
        match self {
            Resource::NetworkPolicy(o)
            | Resource::GlobalNetworkPolicy(o)
            | Resource::StagedNetworkPolicy(o)
            | Resource::StagedGlobalNetworkPolicy(o) => doc(k, o, s),
            Resource::StagedKubernetesNetworkPolicy(o) | Resource::KubernetesNetworkPolicy(o) => {
                doc(k, o, s)
            }
            Resource::Tier(o) => doc(k, o, s),
            Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => doc(k, o, s),
            Resource::HostEndpoint(o) => doc(k, o, s),
            Resource::WorkloadEndpoint(o) => doc(k, o, s),
            Resource::Profile(o) => doc(k, o, s),
            Resource::Namespace(o) => doc(k, o, s),
        }
    }
}

/// Identity of a resource in a store. A staged policy and an enforced policy of the
/// same name are different keys (their kinds differ).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}
