//! Connection keys: the canonical key both directions of a connection share, the
//! direction a packet travels in relative to it, and the seeded hash that places keys
//! in tables and spreads them over workers.

use crate::packet::{ConnClass, ConnTuple};
use crate::program::Family;

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
    pub(super) tail: u64,
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
