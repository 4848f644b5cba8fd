//! Capture files: reading and writing pcap and pcapng with Ethernet frames.
//!
//! This module owns tiergate's view of a capture: a sequence of [`FrameRef`]s
//! (timestamp in nanoseconds, original length, captured bytes). [`CaptureReader`]
//! streams frames from a pcap or pcapng file without a per-frame allocation (the
//! format is detected from the magic number); [`Frames`] holds a whole capture in
//! one flat buffer for replay and benchmarks; [`CaptureWriter`] writes either format.
//! Only Ethernet link types are accepted: anything else is an error that names the
//! file and the link type, never a silent misparse.
//!
//! A file that ends in the middle of a record (a capture copied while it was being
//! written, a download cut short) is not an error for the reader: it ends after the
//! last whole frame and [`CaptureReader::cut`] says where the file was cut (byte
//! offset, frame number), so a replay can use what was readable and warn.
//! [`Frames::read`], which promises the whole file, reports the cut as
//! [`CaptureError::Truncated`].

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};

/// Where a capture file ends in the middle of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureCut {
    /// Byte offset where the incomplete record starts (the end of the last whole one).
    pub offset: u64,
    /// Size of the file in bytes.
    pub file_bytes: u64,
    /// 1-based number of the frame that is cut (frames before it are whole).
    pub frame: u64,
}

impl std::fmt::Display for CaptureCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the file ends in the middle of frame {} (byte {} of {}); the {} whole frame{} before it were read",
            self.frame,
            self.offset,
            self.file_bytes,
            self.frame - 1,
            if self.frame == 2 { "" } else { "s" }
        )
    }
}

/// Errors of capture I/O. Each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a pcap or pcapng file, or is corrupt.
    #[error("{path}: not a valid pcap/pcapng capture: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What the pcap reader found.
        #[source]
        source: pcap_file::PcapError,
    },
    /// The file ends in the middle of a record (for readers that need every frame).
    #[error("{path}: {cut}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where.
        cut: CaptureCut,
    },
    /// The capture's link type is not Ethernet.
    #[error("{path}: link type {link} is not supported (only Ethernet, DLT_EN10MB = 1)")]
    LinkType {
        /// The file.
        path: PathBuf,
        /// The link type found.
        link: String,
    },
}

/// One captured frame, borrowed from a reader or a [`Frames`] buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire (≥ `data.len()` unless the file lies).
    pub orig_len: u32,
    /// Captured bytes, starting with the Ethernet header.
    pub data: &'a [u8],
}

/// What a [`CaptureReader`] reads from: a file, or bytes already in memory.
type Source = BufReader<Box<dyn Read + Send>>;

enum Inner {
    Pcap(PcapReader<Source>),
    PcapNg {
        reader: PcapNgReader<Source>,
        /// Timestamp scale per interface, in interface-id order.
        ifaces: Vec<TsScale>,
    },
}

/// Timestamp units of a pcapng interface: `raw * num / den` nanoseconds.
#[derive(Clone, Copy, Debug)]
struct TsScale {
    num: u128,
    den: u128,
}

impl TsScale {
    fn from_tsresol(r: Option<u8>) -> TsScale {
        // Default resolution is microseconds (10^-6). High bit set: power of two.
        let r = r.unwrap_or(6);
        let units_per_sec: u128 = if r & 0x80 != 0 {
            1u128.checked_shl(u32::from(r & 0x7f)).unwrap_or(1)
        } else {
            10u128.checked_pow(u32::from(r)).unwrap_or(1)
        };
        TsScale {
            num: 1_000_000_000,
            den: units_per_sec.max(1),
        }
    }

    fn to_ns(self, raw: u128) -> u64 {
        u64::try_from(raw.saturating_mul(self.num) / self.den).unwrap_or(u64::MAX)
    }
}

/// Streams frames from a pcap or pcapng file.
pub struct CaptureReader {
    path: PathBuf,
    inner: Inner,
    /// The current pcapng frame (reused; pcap frames borrow the reader's buffer).
    buf: Vec<u8>,
    /// Byte offset of the end of the last whole record read.
    offset: u64,
    /// Frames returned so far.
    frames: u64,
    /// Set when the file turned out to end inside a record.
    cut: Option<CaptureCut>,
    /// The length of a capture held in memory (a file's is read when it is cut).
    len: Option<u64>,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn dlt_name(d: DataLink) -> String {
    format!("{d:?} ({})", u32::from(d))
}

/// The first bytes of a capture: the magic number and, for pcapng, the first block's
/// length and byte-order magic.
struct Head {
    bytes: [u8; 12],
    len: usize,
}

/// Reads up to 12 bytes of a capture's start; fewer than the 4-byte magic is an error.
fn read_head(mut r: impl Read) -> std::io::Result<Head> {
    let mut head = Head {
        bytes: [0; 12],
        len: 0,
    };
    while head.len < head.bytes.len() {
        match r.read(&mut head.bytes[head.len..]) {
            Ok(0) => break,
            Ok(n) => head.len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if head.len < 4 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(head)
}

impl CaptureReader {
    /// Opens a capture; the format is detected from the magic number.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| CaptureError::Io {
            path: path.clone(),
            source,
        };
        let head = File::open(&path).and_then(read_head).map_err(io)?;
        let file: Box<dyn Read + Send> = Box::new(File::open(&path).map_err(io)?);
        Self::from_source(path, head, BufReader::new(file), None)
    }

    /// Reads a capture held in memory (e.g. read from stdin); `name` stands for the
    /// file in errors.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, CaptureError> {
        let path = name.into();
        let head = read_head(std::io::Cursor::new(&bytes)).map_err(|source| CaptureError::Io {
            path: path.clone(),
            source,
        })?;
        let len = bytes.len() as u64;
        let src: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(bytes));
        Self::from_source(path, head, BufReader::new(src), Some(len))
    }

    fn from_source(
        path: PathBuf,
        head: Head,
        file: Source,
        len: Option<u64>,
    ) -> Result<Self, CaptureError> {
        let fmt = |source| CaptureError::Format {
            path: path.clone(),
            source,
        };
        let pcapng = head.bytes[..4] == [0x0a, 0x0d, 0x0d, 0x0a];
        // The records start after the file header (pcap) or the first section header
        // block, whose length follows the magic in the byte order the block states.
        let offset = if pcapng && head.len >= 12 {
            let b = &head.bytes;
            let len = [b[4], b[5], b[6], b[7]];
            u64::from(if b[8..12] == [0x4d, 0x3c, 0x2b, 0x1a] {
                u32::from_le_bytes(len)
            } else {
                u32::from_be_bytes(len)
            })
        } else {
            24
        };
        let inner = if pcapng {
            Inner::PcapNg {
                reader: PcapNgReader::new(file).map_err(fmt)?,
                ifaces: Vec::new(),
            }
        } else {
            let reader = PcapReader::new(file).map_err(fmt)?;
            let link = reader.header().datalink;
            if link != DataLink::ETHERNET {
                return Err(CaptureError::LinkType {
                    path,
                    link: dlt_name(link),
                });
            }
            Inner::Pcap(reader)
        };
        Ok(CaptureReader {
            path,
            inner,
            buf: Vec::new(),
            offset,
            frames: 0,
            cut: None,
            len,
        })
    }

    /// Where the file was cut short, once [`CaptureReader::next_frame`] has reached
    /// the cut (it then returns `None`, as at a clean end).
    pub fn cut(&self) -> Option<CaptureCut> {
        self.cut
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next frame, `None` at the end of the file (or where it is cut short: see
    /// [`CaptureReader::cut`]).
    #[allow(clippy::should_implement_trait)] // frames borrow from the reader
    pub fn next_frame(&mut self) -> Option<Result<FrameRef<'_>, CaptureError>> {
        let CaptureReader {
            path,
            inner,
            buf,
            offset,
            frames,
            cut,
            len,
        } = self;
        if cut.is_some() {
            return None;
        }
        let fmt = |source| CaptureError::Format {
            path: path.clone(),
            source,
        };
        // The file ends inside a record: stop there and say where.
        let mut cut_here = |offset: u64, frames: u64| {
            // In memory: the length read; a file: its size now (it may have grown).
            let file_bytes =
                len.unwrap_or_else(|| std::fs::metadata(&*path).map_or(offset, |m| m.len()));
            *cut = Some(CaptureCut {
                offset,
                file_bytes,
                frame: frames + 1,
            });
        };
        let eof = |e: &pcap_file::PcapError| matches!(e, pcap_file::PcapError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof);
        match inner {
            Inner::Pcap(r) => {
                // Raw packets: pcap-file's checked conversion rejects orig_len > snaplen,
                // which real captures (and fuzzer-made ones) contain; lengths are taken
                // as recorded and timestamps computed without overflow.
                let nano = r.header().ts_resolution == pcap_file::TsResolution::NanoSecond;
                let p = match r.next_raw_packet()? {
                    Ok(p) => p,
                    Err(e) if eof(&e) => {
                        cut_here(*offset, *frames);
                        return None;
                    }
                    Err(e) => return Some(Err(fmt(e))),
                };
                *offset += 16 + p.data.len() as u64;
                *frames += 1;
                let frac = u64::from(p.ts_frac) * if nano { 1 } else { 1_000 };
                let ts_ns = u64::from(p.ts_sec)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(frac);
                match p.data {
                    std::borrow::Cow::Borrowed(data) => Some(Ok(FrameRef {
                        ts_ns,
                        orig_len: p.orig_len,
                        data,
                    })),
                    // pcap-file borrows when reading; an owned buffer would not
                    // outlive this call.
                    std::borrow::Cow::Owned(_) => Some(Err(fmt(
                        pcap_file::PcapError::InvalidField("unexpected owned packet data"),
                    ))),
                }
            }
            Inner::PcapNg { reader, ifaces } => {
                // Raw blocks, for their lengths (the offset of a cut); each is then
                // decoded in the byte order of its section. Frames are copied into
                // `buf` so the borrow of the reader ends inside the loop.
                let (ts_ns, orig_len) = loop {
                    let section_endianness = reader.section().endianness;
                    let raw = match reader.next_raw_block()? {
                        Ok(b) => b,
                        Err(e) if eof(&e) => {
                            cut_here(*offset, *frames);
                            return None;
                        }
                        Err(e) => return Some(Err(fmt(e))),
                    };
                    *offset += u64::from(raw.initial_len);
                    // A section header states its own byte order.
                    let little = if raw.type_ == 0x0A0D_0D0A {
                        raw.body.get(..4) == Some(&[0x4d, 0x3c, 0x2b, 0x1a][..])
                    } else {
                        section_endianness == pcap_file::Endianness::Little
                    };
                    let block = if little {
                        raw.try_into_block::<byteorder_slice::LittleEndian>()
                    } else {
                        raw.try_into_block::<byteorder_slice::BigEndian>()
                    };
                    let block = match block {
                        Ok(b) => b,
                        Err(e) => return Some(Err(fmt(e))),
                    };
                    match block {
                        Block::SectionHeader(_) => ifaces.clear(),
                        Block::InterfaceDescription(idb) => {
                            if idb.linktype != DataLink::ETHERNET {
                                return Some(Err(CaptureError::LinkType {
                                    path: path.clone(),
                                    link: dlt_name(idb.linktype),
                                }));
                            }
                            let tsresol = idb.options.iter().find_map(|o| match o {
                                InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                                _ => None,
                            });
                            ifaces.push(TsScale::from_tsresol(tsresol));
                        }
                        Block::EnhancedPacket(epb) => {
                            let scale = usize::try_from(epb.interface_id)
                                .ok()
                                .and_then(|i| ifaces.get(i))
                                .copied()
                                .unwrap_or(TsScale::from_tsresol(None));
                            buf.clear();
                            buf.extend_from_slice(&epb.data);
                            break (scale.to_ns(epb.timestamp.as_nanos()), epb.original_len);
                        }
                        Block::SimplePacket(spb) => {
                            buf.clear();
                            buf.extend_from_slice(&spb.data);
                            break (0, spb.original_len);
                        }
                        _ => {}
                    }
                };
                *frames += 1;
                Some(Ok(FrameRef {
                    ts_ns,
                    orig_len,
                    data: buf,
                }))
            }
        }
    }
}

/// A whole capture in memory: one flat byte buffer plus an index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frames {
    bytes: Vec<u8>,
    /// (offset into `bytes`, captured length, original length, timestamp ns)
    index: Vec<(usize, u32, u32, u64)>,
}

impl Frames {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a whole capture file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        Self::read_all(CaptureReader::open(path)?)
    }

    /// Reads a whole capture held in memory (pcap or pcapng, e.g. from stdin); `name`
    /// stands for the file in errors.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, CaptureError> {
        Self::read_all(CaptureReader::from_bytes(name, bytes)?)
    }

    /// Reads a capture held in memory up to where it is cut, as [`CaptureReader`]
    /// streams a file: the whole frames, and the cut if the bytes end inside a record.
    pub fn from_bytes_to_cut(
        name: impl Into<PathBuf>,
        bytes: Vec<u8>,
    ) -> Result<(Self, Option<CaptureCut>), CaptureError> {
        Self::read_to_cut(CaptureReader::from_bytes(name, bytes)?)
    }

    fn read_all(r: CaptureReader) -> Result<Self, CaptureError> {
        let path = r.path().to_path_buf();
        match Self::read_to_cut(r)? {
            (_, Some(cut)) => Err(CaptureError::Truncated { path, cut }),
            (out, None) => Ok(out),
        }
    }

    fn read_to_cut(mut r: CaptureReader) -> Result<(Self, Option<CaptureCut>), CaptureError> {
        let mut out = Frames::new();
        while let Some(f) = r.next_frame() {
            out.push(f?);
        }
        Ok((out, r.cut()))
    }

    /// Appends a frame (copied).
    pub fn push(&mut self, f: FrameRef<'_>) {
        let off = self.bytes.len();
        self.bytes.extend_from_slice(f.data);
        let caplen = u32::try_from(f.data.len()).unwrap_or(u32::MAX);
        self.index.push((off, caplen, f.orig_len, f.ts_ns));
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no frames.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Frame `i`, if it exists.
    #[inline]
    pub fn get(&self, i: usize) -> Option<FrameRef<'_>> {
        let &(off, caplen, orig_len, ts_ns) = self.index.get(i)?;
        let data = self.bytes.get(off..off + caplen as usize)?;
        Some(FrameRef {
            ts_ns,
            orig_len,
            data,
        })
    }

    /// All frames in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = FrameRef<'_>> + '_ {
        self.index
            .iter()
            .map(|&(off, caplen, orig_len, ts_ns)| FrameRef {
                ts_ns,
                orig_len,
                data: &self.bytes[off..off + caplen as usize],
            })
    }

    /// Sum of original lengths.
    pub fn wire_bytes(&self) -> u64 {
        self.index.iter().map(|e| u64::from(e.2)).sum()
    }

    /// Writes all frames to `path` in `format`.
    pub fn write(&self, path: impl AsRef<Path>, format: CaptureFormat) -> Result<(), CaptureError> {
        let mut w = CaptureWriter::create(path, format)?;
        for f in self.iter() {
            w.write_frame(f)?;
        }
        w.finish()
    }
}

/// File format written by [`CaptureWriter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CaptureFormat {
    /// Classic libpcap, microsecond timestamps, Ethernet.
    #[default]
    Pcap,
    /// pcapng, one Ethernet interface, nanosecond timestamps.
    PcapNg,
}

enum WInner<W: Write> {
    Pcap(PcapWriter<BufWriter<W>>),
    PcapNg(PcapNgWriter<BufWriter<W>>),
}

/// Writes Ethernet frames to a pcap or pcapng file.
pub struct CaptureWriter<W: Write = File> {
    path: PathBuf,
    inner: WInner<W>,
}

impl<W: Write> std::fmt::Debug for CaptureWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// An error of the pcap encoder: an I/O error is reported as one (not as a format
/// problem: the encoder wraps the OS error of a full disk in its own type).
fn write_error(path: &Path, source: pcap_file::PcapError) -> CaptureError {
    match source {
        pcap_file::PcapError::IoError(source) => CaptureError::Io {
            path: path.to_path_buf(),
            source,
        },
        source => CaptureError::Format {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// The snap length written into headers.
const SNAPLEN: u32 = 262_144;

impl CaptureWriter<File> {
    /// Creates (truncates) `path`.
    pub fn create(path: impl AsRef<Path>, format: CaptureFormat) -> Result<Self, CaptureError> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|source| CaptureError::Io {
            path: path.clone(),
            source,
        })?;
        Self::new(file, path, format)
    }
}

impl<W: Write> CaptureWriter<W> {
    /// Writes to `out` (a file, stdout, a temporary file, ...); `name` stands for it
    /// in errors.
    pub fn new(
        out: W,
        name: impl Into<PathBuf>,
        format: CaptureFormat,
    ) -> Result<Self, CaptureError> {
        let path = name.into();
        let file = BufWriter::new(out);
        let fmt = |source| write_error(&path, source);
        let inner = match format {
            CaptureFormat::Pcap => {
                let header = PcapHeader {
                    datalink: DataLink::ETHERNET,
                    snaplen: SNAPLEN,
                    ..Default::default()
                };
                WInner::Pcap(PcapWriter::with_header(file, header).map_err(fmt)?)
            }
            CaptureFormat::PcapNg => {
                let mut w = PcapNgWriter::new(file).map_err(fmt)?;
                let idb = InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: SNAPLEN,
                    options: vec![InterfaceDescriptionOption::IfTsResol(9)],
                };
                w.write_pcapng_block(idb).map_err(fmt)?;
                WInner::PcapNg(w)
            }
        };
        Ok(CaptureWriter { path, inner })
    }

    /// Appends one frame.
    pub fn write_frame(&mut self, f: FrameRef<'_>) -> Result<(), CaptureError> {
        let path = &self.path;
        let fmt = |source| write_error(path, source);
        let orig_len = f
            .orig_len
            .max(u32::try_from(f.data.len()).unwrap_or(u32::MAX));
        match &mut self.inner {
            WInner::Pcap(w) => {
                let p = PcapPacket::new(Duration::from_nanos(f.ts_ns), orig_len, f.data);
                w.write_packet(&p).map_err(fmt)?;
            }
            WInner::PcapNg(w) => {
                let epb = EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: Duration::from_nanos(f.ts_ns),
                    original_len: orig_len,
                    data: std::borrow::Cow::Borrowed(f.data),
                    options: Vec::new(),
                };
                w.write_pcapng_block(epb).map_err(fmt)?;
            }
        }
        Ok(())
    }

    /// Flushes and closes the file.
    pub fn finish(self) -> Result<(), CaptureError> {
        self.into_inner().map(drop)
    }

    /// Flushes everything and returns the writer it wrote to.
    pub fn into_inner(self) -> Result<W, CaptureError> {
        let path = self.path;
        let w = match self.inner {
            WInner::Pcap(w) => w.into_writer(),
            WInner::PcapNg(w) => w.into_inner(),
        };
        w.into_inner().map_err(|e| CaptureError::Io {
            path,
            source: e.into_error(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Frames {
        let mut f = Frames::new();
        for i in 0..5u8 {
            let data: Vec<u8> = (0..(60 + i as usize)).map(|b| b as u8 ^ i).collect();
            f.push(FrameRef {
                ts_ns: 1_700_000_000_000_000_000 + u64::from(i) * 1_234_000,
                orig_len: 60 + u32::from(i) + if i == 3 { 100 } else { 0 },
                data: &data,
            });
        }
        f
    }

    #[test]
    fn a_cut_tail_ends_the_frames_and_says_where() {
        let dir = std::env::temp_dir().join(format!("tiergate-cut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let frames = sample();
        for format in [CaptureFormat::Pcap, CaptureFormat::PcapNg] {
            let p = dir.join(format!("{format:?}.cap"));
            frames.write(&p, format).expect("write");
            let whole = std::fs::read(&p).expect("read back");
            // Where each record ends, from a reader of the whole file.
            let mut r = CaptureReader::open(&p).expect("open");
            let mut ends = vec![r.offset];
            while let Some(f) = r.next_frame() {
                f.expect("frame");
                ends.push(r.offset);
            }
            assert_eq!(r.cut(), None);
            assert_eq!(*ends.last().unwrap(), whole.len() as u64, "{format:?}");
            // Cut inside the fourth frame's record: three whole frames are read.
            let at = (ends[3] + 7) as usize;
            std::fs::write(&p, &whole[..at]).expect("write cut");
            let mut r = CaptureReader::open(&p).expect("open cut");
            let mut n = 0;
            while let Some(f) = r.next_frame() {
                assert_eq!(f.expect("whole frame"), frames.get(n).unwrap());
                n += 1;
            }
            assert_eq!(n, 3, "{format:?}");
            let cut = r.cut().expect("cut noticed");
            assert_eq!(
                cut,
                CaptureCut {
                    offset: ends[3],
                    file_bytes: at as u64,
                    frame: 4
                },
                "{format:?}"
            );
            assert!(r.next_frame().is_none());
            assert_eq!(
                cut.to_string(),
                format!(
                    "the file ends in the middle of frame 4 (byte {} of {at}); the 3 whole frames before it were read",
                    ends[3]
                )
            );
            // A reader that promises the whole file reports the cut.
            let e = Frames::read(&p).unwrap_err();
            assert!(matches!(e, CaptureError::Truncated { .. }), "{e}");
            // The same bytes in memory (stdin) are cut at the same place, and the
            // size is the length read, not that of a file of the name.
            let cut_bytes = whole[..at].to_vec();
            let e = Frames::from_bytes("<stdin>", cut_bytes.clone()).unwrap_err();
            assert!(
                matches!(e, CaptureError::Truncated { cut: c, .. } if c == cut),
                "{e}"
            );
            let (read, c) = Frames::from_bytes_to_cut("<stdin>", cut_bytes).expect("to the cut");
            assert_eq!(c, Some(cut), "{format:?}");
            assert_eq!(read.len(), 3);
            assert_eq!(read.get(2), frames.get(2));
            // A name that is an existing file of another size does not change it.
            let (_, c) =
                Frames::from_bytes_to_cut(&p, whole[..at - 1].to_vec()).expect("to the cut");
            assert_eq!(c.map(|c| c.file_bytes), Some(at as u64 - 1));
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn pcap_and_pcapng_round_trip() {
        let dir = std::env::temp_dir().join(format!("tiergate-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let frames = sample();
        for format in [CaptureFormat::Pcap, CaptureFormat::PcapNg] {
            let p = dir.join(format!("{format:?}.cap"));
            frames.write(&p, format).expect("write");
            let back = Frames::read(&p).expect("read");
            assert_eq!(back, frames, "{format:?}");
            // The same bytes from memory (what `--pcap -` reads from stdin).
            let bytes = std::fs::read(&p).expect("read bytes");
            let back = Frames::from_bytes("<stdin>", bytes).expect("from bytes");
            assert_eq!(back, frames, "{format:?} from memory");
            // Into any writer, handed back on success.
            let mut w = CaptureWriter::new(Vec::new(), "<memory>", format).expect("new");
            for f in frames.iter() {
                w.write_frame(f).expect("write frame");
            }
            let written = w.into_inner().expect("into_inner");
            assert_eq!(
                written,
                std::fs::read(&p).expect("read bytes"),
                "{format:?}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
        let e = Frames::from_bytes("<stdin>", b"ab".to_vec()).expect_err("too short");
        assert!(e.to_string().starts_with("<stdin>: "), "{e}");
    }

    #[test]
    fn a_full_disk_is_an_io_error_not_a_format_error() {
        // The encoder's own error type wraps the OS error; it must come out as I/O.
        let mut big = Frames::new();
        let data = [0u8; 1500];
        for i in 0..100 {
            big.push(FrameRef {
                ts_ns: i,
                orig_len: 1500,
                data: &data,
            });
        }
        for format in [CaptureFormat::Pcap, CaptureFormat::PcapNg] {
            let e = big
                .write("/dev/full", format)
                .expect_err("/dev/full is full");
            assert!(matches!(e, CaptureError::Io { .. }), "{format:?}: {e:?}");
            assert!(e.to_string().starts_with("/dev/full: "), "{e}");
            assert!(!e.to_string().contains("not a valid"), "{e}");
        }
    }

    #[test]
    fn not_a_capture_names_the_file() {
        let p = std::env::temp_dir().join(format!("tiergate-notcap-{}", std::process::id()));
        std::fs::write(&p, b"this is not a capture file at all").expect("write");
        let e = Frames::read(&p).expect_err("must fail");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        std::fs::remove_file(&p).ok();
        let missing = Frames::read("/nonexistent/x.pcap").expect_err("missing");
        assert!(missing.to_string().contains("/nonexistent/x.pcap"));
    }

    #[test]
    fn ts_scale() {
        assert_eq!(TsScale::from_tsresol(None).to_ns(5), 5_000);
        assert_eq!(TsScale::from_tsresol(Some(9)).to_ns(5), 5);
        assert_eq!(
            TsScale::from_tsresol(Some(0x80 | 10)).to_ns(1024),
            1_000_000_000
        );
    }
}
