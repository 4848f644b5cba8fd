//! Capture I/O for tiergate: pcap/pcapng read and write, ClassBench filter sets and
//! traces, and synthetic traffic generation.

pub mod capture;
pub mod classbench;
pub mod shared;
pub mod synth;
