//! Ports: where a worker's frames come from and where its verdicts go.
//!
//! [`Port`] is the seam between a [`Worker`](crate::worker::Worker) and its packet
//! I/O; [`RxFrame`] is one received frame and [`Rx`] what a receive call produced.
//! The implementations live here, one module each: [`mem`] (an in-memory port over a
//! set of frames, for tests and benchmarks), `chunk` (the replay dispatcher's
//! chunks of a capture, and the pacer of recorded-speed replay) and `afxdp` (AF_XDP
//! sockets on two interfaces, and the live run that owns them; Linux, feature
//! `afxdp`, on by default). [`counters`] holds the live run's counters as plain values. A port must not
//! allocate, lock or format per frame.

#[cfg(all(feature = "afxdp", target_os = "linux"))]
pub mod afxdp;
pub(crate) mod chunk;
pub mod counters;
pub mod mem;

pub use mem::MemPort;

/// One received frame: where its bytes are (port-specific handle), when it arrived,
/// how long it was on the wire, and on which interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxFrame {
    /// Port-specific handle (UMEM address, frame index, ...).
    pub handle: u64,
    /// Arrival time (ns; packet time for replay).
    pub ts_ns: u64,
    /// Length on the wire.
    pub wire_len: u32,
    /// Receiving interface, copied into the flow key.
    pub ifindex: u16,
}

/// What a [`Port::rx_batch`] call produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rx {
    /// This many frames were written to the start of the batch (≥ 1).
    Frames(usize),
    /// Nothing right now (a live port); the worker polls again.
    Idle,
    /// The source is exhausted (replay); the worker drains and stops.
    End,
}

/// The seam between a worker and its packet I/O: AF_XDP sockets, pcap replay, or an
/// in-memory port in tests. Implementations must not allocate per frame.
pub trait Port {
    /// Receives up to `out.len()` frames.
    fn rx_batch(&mut self, out: &mut [RxFrame]) -> Rx;
    /// The bytes of a frame received by the last `rx_batch` call.
    fn data(&self, frame: &RxFrame) -> &[u8];
    /// Forwards frames of the last batch.
    fn tx_batch(&mut self, frames: &[RxFrame]);
    /// Releases dropped frames of the last batch.
    fn drop_batch(&mut self, frames: &[RxFrame]);
}
