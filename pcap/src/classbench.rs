//! ClassBench filter sets and header traces (Taylor & Turner, ClassBench, 2005).
//!
//! Filter line: `@SA/SLEN<TAB>DA/DLEN<TAB>SPLO : SPHI<TAB>DPLO : DPHI<TAB>0xPP/0xPM<TAB>0xFLAGS/0xMASK<TAB>`
//! (line order is priority: the rule on line k has index k-1). Trace line: seven
//! TAB-separated decimals `SA DA SP DP PROTO FLAGS FILTER`, addresses as host-order
//! integers. The 16-bit flags field of filters and the FLAGS column of traces are read
//! and kept but classifiers ignore them, as DPDK's test-acl and the literature do.
//! Errors name the file and line and say what was expected.

use std::path::{Path, PathBuf};

/// One ClassBench filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Source address (host order) and prefix length (0..=32).
    pub src: (u32, u8),
    /// Destination address (host order) and prefix length (0..=32).
    pub dst: (u32, u8),
    /// Inclusive source port range.
    pub sport: (u16, u16),
    /// Inclusive destination port range.
    pub dport: (u16, u16),
    /// Protocol value and mask (mask 0xFF = exact, 0x00 = any).
    pub proto: (u8, u8),
    /// The flags field, value and mask (ignored by 5-tuple classifiers).
    pub flags: (u16, u16),
}

impl Filter {
    /// Whether the header's 5-tuple matches (the flags field is ignored).
    pub fn matches(&self, h: &Header) -> bool {
        let pfx = |a: u32, (v, len): (u32, u8)| len == 0 || (a ^ v) >> (32 - u32::from(len)) == 0;
        pfx(h.src, self.src)
            && pfx(h.dst, self.dst)
            && (self.sport.0..=self.sport.1).contains(&h.sport)
            && (self.dport.0..=self.dport.1).contains(&h.dport)
            && h.proto & self.proto.1 == self.proto.0 & self.proto.1
    }
}

/// One trace header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Source address, host order.
    pub src: u32,
    /// Destination address, host order.
    pub dst: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// ClassBench flags point (not TCP flags).
    pub flags: u32,
    /// 0-based index of the filter the header was generated from (not necessarily the
    /// first match).
    pub filter: u32,
}

/// A parse failure, naming the file and line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not in the expected format.
    #[error("{path}:{line}: {reason} (in {text:?})")]
    Syntax {
        /// The file (or `<input>` for in-memory text).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong and what is accepted.
        reason: String,
        /// The offending line.
        text: String,
    },
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a filter set file.
pub fn read_filters(path: &Path) -> Result<Vec<Filter>, Error> {
    parse_filters(&read(path)?, path)
}

/// Reads a trace file.
pub fn read_trace(path: &Path) -> Result<Vec<Header>, Error> {
    parse_trace(&read(path)?, path)
}

/// Reads a `.firstmatch` oracle file: one 0-based rule index per line.
pub fn read_first_match(path: &Path) -> Result<Vec<u32>, Error> {
    let text = read(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        out.push(t.parse().map_err(|_| Error::Syntax {
            path: path.to_owned(),
            line: i + 1,
            reason: "expected a rule index (unsigned decimal)".into(),
            text: line.into(),
        })?);
    }
    Ok(out)
}

fn syntax(path: &Path, line: usize, text: &str, reason: impl Into<String>) -> Error {
    Error::Syntax {
        path: path.to_owned(),
        line,
        reason: reason.into(),
        text: text.into(),
    }
}

fn prefix(s: &str) -> Option<(u32, u8)> {
    let (a, l) = s.split_once('/')?;
    let addr: std::net::Ipv4Addr = a.trim().parse().ok()?;
    let len: u8 = l.trim().parse().ok()?;
    (len <= 32).then_some((u32::from(addr), len))
}

fn range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once(':')?;
    let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo <= hi).then_some((lo, hi))
}

fn hex_pair<T: TryFrom<u32>>(s: &str) -> Option<(T, T)> {
    let (v, m) = s.split_once('/')?;
    let h = |x: &str| {
        u32::from_str_radix(
            x.trim()
                .strip_prefix("0x")
                .or_else(|| x.trim().strip_prefix("0X"))?,
            16,
        )
        .ok()
    };
    Some((T::try_from(h(v)?).ok()?, T::try_from(h(m)?).ok()?))
}

/// Parses filter-set text; `path` is only used in errors.
pub fn parse_filters(text: &str, path: &Path) -> Result<Vec<Filter>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let Some(t) = t.strip_prefix('@') else {
            return Err(syntax(path, n, line, "a filter line starts with '@'"));
        };
        let f: Vec<&str> = t
            .split('\t')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if f.len() != 6 {
            return Err(syntax(
                path,
                n,
                line,
                format!(
                    "expected 6 TAB-separated fields (SA/len, DA/len, 'lo : hi' twice, proto/mask, flags/mask), found {}",
                    f.len()
                ),
            ));
        }
        let src = prefix(f[0]).ok_or_else(|| {
            syntax(
                path,
                n,
                line,
                "source: expected a.b.c.d/len with len 0..=32",
            )
        })?;
        let dst = prefix(f[1]).ok_or_else(|| {
            syntax(
                path,
                n,
                line,
                "destination: expected a.b.c.d/len with len 0..=32",
            )
        })?;
        let sport = range(f[2]).ok_or_else(|| {
            syntax(
                path,
                n,
                line,
                "source ports: expected 'lo : hi' with lo <= hi <= 65535",
            )
        })?;
        let dport = range(f[3]).ok_or_else(|| {
            syntax(
                path,
                n,
                line,
                "destination ports: expected 'lo : hi' with lo <= hi <= 65535",
            )
        })?;
        let proto = hex_pair::<u8>(f[4])
            .ok_or_else(|| syntax(path, n, line, "protocol: expected 0xPP/0xMM (8-bit hex)"))?;
        let flags = hex_pair::<u16>(f[5])
            .ok_or_else(|| syntax(path, n, line, "flags: expected 0xFFFF/0xMMMM (16-bit hex)"))?;
        out.push(Filter {
            src,
            dst,
            sport,
            dport,
            proto,
            flags,
        });
    }
    Ok(out)
}

/// Parses trace text; `path` is only used in errors.
pub fn parse_trace(text: &str, path: &Path) -> Result<Vec<Header>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 7 {
            return Err(syntax(
                path,
                n,
                line,
                format!(
                    "expected 7 fields (SA DA SP DP PROTO FLAGS FILTER), found {}",
                    f.len()
                ),
            ));
        }
        let num = |k: usize, what: &str, max: u64| -> Result<u64, Error> {
            f[k].parse::<u64>()
                .ok()
                .filter(|&v| v <= max)
                .ok_or_else(|| {
                    syntax(
                        path,
                        n,
                        line,
                        format!(
                            "{what}: expected an unsigned decimal <= {max}, found {:?}",
                            f[k]
                        ),
                    )
                })
        };
        out.push(Header {
            src: num(0, "SA", u32::MAX.into())? as u32,
            dst: num(1, "DA", u32::MAX.into())? as u32,
            sport: num(2, "SP", 65535)? as u16,
            dport: num(3, "DP", 65535)? as u16,
            proto: num(4, "PROTO", 255)? as u8,
            flags: num(5, "FLAGS", u32::MAX.into())? as u32,
            filter: num(6, "FILTER", u32::MAX.into())? as u32,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "set";

    #[test]
    fn parses_a_filter_line() {
        let t = "@237.73.3.4/32\t67.236.63.210/32\t0 : 65535\t1711 : 1711\t0x06/0xFF\t0x0000/0x0200\t\n";
        let f = parse_filters(t, Path::new(P)).expect("parses");
        assert_eq!(
            f,
            vec![Filter {
                src: (0xed49_0304, 32),
                dst: (0x43ec_3fd2, 32),
                sport: (0, 65535),
                dport: (1711, 1711),
                proto: (6, 0xff),
                flags: (0, 0x200),
            }]
        );
    }

    #[test]
    fn filter_errors_name_file_line_and_field() {
        let bad = [
            (
                "@1.2.3.4/33\t0.0.0.0/0\t0 : 1\t0 : 1\t0x06/0xFF\t0x0000/0x0000\t",
                "len 0..=32",
            ),
            (
                "1.2.3.4/32\t0.0.0.0/0\t0 : 1\t0 : 1\t0x06/0xFF\t0x0000/0x0000\t",
                "starts with '@'",
            ),
            (
                "@1.2.3.4/32\t0.0.0.0/0\t5 : 1\t0 : 1\t0x06/0xFF\t0x0000/0x0000\t",
                "source ports",
            ),
            (
                "@1.2.3.4/32\t0.0.0.0/0\t0 : 1\t0 : 70000\t0x06/0xFF\t0x0000/0x0000\t",
                "destination ports",
            ),
            (
                "@1.2.3.4/32\t0.0.0.0/0\t0 : 1\t0 : 1\t0x106/0xFF\t0x0000/0x0000\t",
                "protocol",
            ),
            (
                "@1.2.3.4/32\t0.0.0.0/0\t0 : 1\t0 : 1\t0x06/0xFF\t",
                "6 TAB-separated",
            ),
        ];
        for (line, want) in bad {
            let text = format!("\n{line}\n");
            let e = parse_filters(&text, Path::new(P))
                .expect_err(line)
                .to_string();
            assert!(e.starts_with("set:2: ") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn parses_trace_lines_and_rejects_bad_ones() {
        let h = parse_trace(
            "1923697128\t2273746465\t0\t1221\t6\t4294967295\t261\n",
            Path::new(P),
        )
        .expect("parses");
        assert_eq!(h[0].src, 1_923_697_128);
        assert_eq!((h[0].dport, h[0].proto, h[0].filter), (1221, 6, 261));
        let e = parse_trace("1\t2\t3\t70000\t6\t0\t1\n", Path::new(P))
            .expect_err("port")
            .to_string();
        assert!(e.starts_with("set:1: DP"), "{e}");
        let e = parse_trace("1 2 3\n", Path::new(P))
            .expect_err("short")
            .to_string();
        assert!(e.contains("expected 7 fields"), "{e}");
    }

    #[test]
    fn matching_uses_prefixes_ranges_and_proto_mask() {
        let f = parse_filters(
            "@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t80 : 90\t0x00/0x00\t0x0000/0x0000\t",
            Path::new(P),
        )
        .expect("parses")[0];
        let h = |src: u32, dport: u16, proto: u8| Header {
            src,
            dst: 7,
            sport: 1,
            dport,
            proto,
            flags: 0,
            filter: 0,
        };
        assert!(f.matches(&h(0x0a01_0203, 80, 17)));
        assert!(!f.matches(&h(0x0b01_0203, 80, 17)));
        assert!(!f.matches(&h(0x0a01_0203, 91, 17)));
    }

    #[test]
    fn vendored_1k_sets_parse() {
        let dir = crate::shared::fixtures("classbench");
        for (set, n) in [("acl1_1k", 878), ("fw1_1k", 761)] {
            let f = read_filters(&dir.join(set)).expect("parses");
            assert_eq!(f.len(), n);
            let t = read_trace(&dir.join(format!("{set}_trace"))).expect("parses");
            assert_eq!(t.len(), n * 10);
            // The generating filter always matches its header.
            assert!(t.iter().all(|h| f[h.filter as usize].matches(h)));
            // The oracle names a matching filter no later than the generating one, and
            // no earlier filter matches.
            let first =
                read_first_match(&dir.join(format!("{set}_trace.firstmatch"))).expect("parses");
            assert_eq!(first.len(), t.len());
            for (h, &m) in t.iter().zip(&first) {
                assert!(m <= h.filter && f[m as usize].matches(h));
                assert!(!f[..m as usize].iter().any(|g| g.matches(h)));
            }
        }
    }
}
