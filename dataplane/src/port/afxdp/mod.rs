//! The AF_XDP port: workers forwarding between two interfaces through AF_XDP
//! sockets, and the live run that owns them ([`start`]).
//!
//! # Layout
//! - **One socket per (interface, queue)**, owned by one worker thread pinned with
//!   `core_affinity`. Worker `w` of `W` owns queues `q` with `q mod W = w` on *both*
//!   interfaces (usually one queue each: `--workers` = `--queues`).
//! - **One UMEM per worker**, shared by all its sockets (xsk-rs shared UMEM: each
//!   (interface, queue) gets its own fill and completion ring). A forwarded frame is
//!   received on one interface's rx ring and posted on the other's tx ring: it changes
//!   rings, not memory. Completed frames refill whichever fill ring needs them.
//! - **Batch order** ([`XskPort`]'s `rx_batch`): reap completion rings, top up the
//!   fill rings, then receive up to `batch` frames (sockets served round robin).
//!   Freeing and re-posting frames before receiving keeps the fill rings full, so an
//!   overloaded port drops at the kernel's fill ring (counted) rather than starving:
//!   the cost per received frame stays constant and the forwarded rate does not
//!   collapse with the offered load. Transmit happens in the same pass, right after
//!   the verdicts (`tx_batch`), with a `sendto` kick only when the ring asks for one
//!   (need-wakeup).
//! - **Zero-copy when the driver offers it**, copy mode otherwise (veth). Bind asks
//!   for zero-copy first and falls back.
//! - **The XDP program** is tiergate's own (a few BPF instructions, `sys`):
//!   `bpf_redirect_map(xsks, rx_queue_index, XDP_PASS)`, so a queue without a socket
//!   still reaches the kernel. In router mode it first passes non-IP ethertypes to the
//!   kernel (ARP, LLDP, ... are answered by the host's own stack). It is attached
//!   through a **BPF link** held by this process: it is detached when the run ends,
//!   and also when the process is killed (the kernel closes the link with the last
//!   fd), so a killed run leaves nothing attached. A program some other tool attached
//!   is never replaced silently: the run refuses to start and says how to remove it.
//!   libxdp's own program loading is inhibited.
//! - **Flow offload** (`AfXdpConfig::offload`, `tiergate run --offload`): the XDP
//!   program is then `offload.bpf.c` instead (C, compiled by build.rs with
//!   `clang -target bpf`, loaded with libbpf, attached the same way). It parses
//!   Ethernet, IPv4 (any IHL; fragments go to the socket) or IPv6 (no extension
//!   headers) and TCP/UDP; TCP with SYN, FIN or RST goes to the socket. It looks the
//!   direction-specific key (ingress ifindex, family, protocol, addresses, ports) up in
//!   `tg_flows`, a hash map the workers write (`XskOffload`, one handle per worker;
//!   the maps are shared by both interfaces' programs). Each entry names the worker
//!   that installed it; on a hit whose generation is that worker's in `tg_gen` (one
//!   slot per worker) it adds the packet to the entry's counters (atomic adds),
//!   stamps `bpf_ktime_get_ns`, rewrites the MACs in router mode and redirects to the
//!   other interface through the devmap `tg_tx`; a miss or a stale entry goes to the
//!   socket, and non-IP frames are handled as without offload. Workers install
//!   connections once established and allowed (`BPF_NOEXIST`: an entry another
//!   worker installed is left to it, see the worker's `offload` module), merge the
//!   counters into their flow entries before anything reads them, and remove them
//!   when they close, expire or are evicted; each worker writes its own slot of
//!   `tg_gen` when it picks a policy generation up, which makes every entry it
//!   installed for an older one stale at once (no worker writes another's). Times
//!   from the program (CLOCK_MONOTONIC) are put on the port's clock. Redirecting into
//!   a veth needs NAPI on its peer (GRO on, or an XDP program there).
//! - **Scheduling** ([`Sched`]): by default a worker is a real-time thread
//!   (SCHED_FIFO, priority 1, the lowest) that sleeps in `poll(2)` as soon as its rx
//!   rings are empty. When the driver's receive work (NAPI) runs on the worker's
//!   core, as it does for veth with threaded NAPI on one core, the kernel then fills
//!   the rx ring only while the worker waits, and the worker preempts it as soon as
//!   frames arrive: under overload the excess is refused before the kernel's receive
//!   work (the sender's full queue) instead of being received, copied and dropped at
//!   the full rx ring, which under time sharing cost the core twice the forwarding
//!   work. `Sched::Other` (`--sched other`) keeps the normal policy, and an idle
//!   worker then polls 256 times before sleeping; busy polling always uses it (a
//!   busy-polling worker never sleeps). Without CAP_SYS_NICE the worker falls back to
//!   `Other` and the run says so. A worker about to sleep tells its classifier slot
//!   (`Worker::asleep`), so that a policy change published meanwhile counts as
//!   taken at once instead of after the sleep (up to 10 ms). With an offload it
//!   does not (its XDP program forwards under the worker's last generation); such a
//!   worker sleeps with an eventfd in its `poll(2)` set that each publication
//!   signals, so it wakes and takes the generation at once.
//! - **Live counters** ([`LiveWorker`]): each worker publishes its counters into
//!   atomics of its own, which the control thread reads without locks: after the
//!   first batch at least 100 ms after the previous publication (the clock is read
//!   after every batch), when an idle worker has polled 256 times in vain (before it
//!   sleeps up to 10 ms in `poll(2)`), and when it stops. So a snapshot is at most
//!   100 ms plus one batch old while traffic flows, and about 110 ms when idle.
//! - **Time** is monotonic: frames are stamped with the nanoseconds since the run
//!   started (flow ages and timeouts do not jump when the wall clock is set); the
//!   wall time of the start is added only to the times of flow records (the clock
//!   starts at the start's phase within the export interval, so interval boundaries
//!   still fall on wall-clock multiples of the interval).
//!
//! # Forwarding modes ([`Forwarding`])
//! - `Wire` (default): bump in the wire. Frames are forwarded untouched; frames that
//!   are not IP (ARP, LLDP, ...) are forwarded to the other interface too, without
//!   policy, so ARP works across the wire.
//! - `Router`: the source MAC becomes the egress interface's own MAC and the
//!   destination MAC the configured next hop of that interface; non-IP frames go to
//!   the kernel (XDP_PASS), which answers ARP for the interface's addresses.

mod sys;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::Sender;
use crossbeam::utils::CachePadded;

use crate::flow::FlowRecord;
use crate::packet::Disposition;
use crate::port::{Port, Rx, RxFrame};
use crate::program::Classify;
use crate::program::{Family, FlowKey};
use crate::worker::{
    ClassifierSlot, FlowOffload, Install, MAX_BATCH, OffloadCounters, OffloadStats, RecordOut,
    Waker, Worker, WorkerConfig, WorkerReport,
};

pub use super::counters::{KernelCounters, QueueCounters, QueueSnapshot, Sched, WorkerSnapshot};
pub use sys::{CopyMode, XdpMode};

impl XdpMode {
    /// `native` or `generic`, as counters and messages name the mode.
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

impl CopyMode {
    /// `zero-copy` or `copy`, as counters and messages name the mode.
    pub fn name(self) -> &'static str {
        match self {
            CopyMode::ZeroCopy => "zero-copy",
            CopyMode::Copy => "copy",
        }
    }
}

/// A MAC address.
pub type Mac = [u8; 6];

/// How frames are forwarded between the two interfaces (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Forwarding {
    /// Bump in the wire: frames untouched, non-IP frames forwarded too.
    #[default]
    Wire,
    /// MAC rewrite: `next_hop[i]` is the destination MAC of frames leaving interface
    /// `i`; the source MAC is interface `i`'s own. Non-IP frames go to the kernel.
    Router {
        /// Next-hop MAC per interface (index as in [`AfXdpConfig::ifaces`]).
        next_hop: [Mac; 2],
    },
}

/// Configuration of a live run.
#[derive(Clone, Debug)]
pub struct AfXdpConfig {
    /// The two interfaces; frames from one are forwarded to the other.
    pub ifaces: [String; 2],
    /// Queues used on each interface (0..queues).
    pub queues: u32,
    /// Worker threads (1..=queues).
    pub workers: usize,
    /// Cores to pin workers to (worker `k` on `cores[k mod len]`); empty = every core
    /// the process may use.
    pub cores: Vec<usize>,
    /// Frames per batch (1..=[`MAX_BATCH`]).
    pub batch: usize,
    /// Busy polling on the sockets (SO_PREFER_BUSY_POLL, SO_BUSY_POLL,
    /// SO_BUSY_POLL_BUDGET = batch) and no sleeping when idle.
    pub busy_poll: bool,
    /// Copy mode even if the driver offers zero-copy.
    pub force_copy: bool,
    /// Generic (skb) XDP even if the driver offers native XDP.
    pub generic_xdp: bool,
    /// Scheduling policy of the workers (`Other` whenever `busy_poll`).
    pub sched: Sched,
    /// Forwarding mode.
    pub forwarding: Forwarding,
    /// Flow offload: established allowed connections are forwarded by the XDP
    /// program (see the module docs).
    pub offload: bool,
    /// Per-worker configuration (flow table, export interval; `batch` and the
    /// unparsed-frame policy are set from this config).
    pub worker: WorkerConfig,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            ifaces: [String::new(), String::new()],
            queues: 1,
            workers: 1,
            cores: Vec::new(),
            batch: 64,
            busy_poll: false,
            force_copy: false,
            generic_xdp: false,
            sched: Sched::Fifo,
            forwarding: Forwarding::Wire,
            offload: false,
            worker: WorkerConfig::default(),
        }
    }
}

/// Why a live run cannot start. Every variant names what is missing.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// Missing capabilities.
    #[error(
        "missing capabilities {missing}: AF_XDP needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF (or CAP_SYS_ADMIN); run as root or grant them (setcap cap_net_admin,cap_net_raw,cap_bpf+ep)"
    )]
    Capabilities {
        /// The capabilities missing, comma-separated.
        missing: String,
    },
    /// RLIMIT_MEMLOCK could not be raised enough.
    #[error(
        "locked-memory limit (RLIMIT_MEMLOCK) is {limit} bytes and cannot be raised ({reason}); the UMEMs need about {needed} bytes: raise it (ulimit -l unlimited) or grant CAP_SYS_RESOURCE/CAP_IPC_LOCK"
    )]
    Memlock {
        /// The limit in force.
        limit: u64,
        /// What the runs needs.
        needed: u64,
        /// Why it could not be raised.
        reason: String,
    },
    /// An interface does not exist.
    #[error("no interface named {0:?} in this network namespace (see `ip link show`)")]
    NoInterface(String),
    /// A queue does not exist.
    #[error(
        "interface {iface} has {available} receive queue(s) (0..{available}); --queues {queues} needs queue {missing}"
    )]
    NoQueue {
        /// Interface.
        iface: String,
        /// Queues it has.
        available: u32,
        /// Queues asked for.
        queues: u32,
        /// The first missing queue.
        missing: u32,
    },
    /// An XDP program is already attached.
    #[error(
        "interface {iface} already has an XDP program attached (id {id}); remove it first (ip link set dev {iface} xdp off) or stop the run that owns it"
    )]
    Busy {
        /// Interface.
        iface: String,
        /// Program id.
        id: u32,
    },
    /// A bad combination of options.
    #[error("{0}")]
    Config(String),
    /// Setting up sockets or the XDP program failed.
    #[error("{0}")]
    Setup(String),
}

// ---- Capabilities, limits, interfaces -----------------------------------------

const CAP_NET_ADMIN: u32 = 12;
const CAP_IPC_LOCK: u32 = 14;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The effective capability mask of this process (from /proc/self/status).
fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// The capabilities a live run needs and this process lacks (empty = all there).
pub fn missing_capabilities() -> Vec<&'static str> {
    let Some(caps) = effective_caps() else {
        return Vec::new();
    };
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_NET_RAW) {
        missing.push("CAP_NET_RAW");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    missing
}

/// Number of receive queues of `iface` (from sysfs), if known.
fn rx_queues(iface: &str) -> Option<u32> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{iface}/queues")).ok()?;
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok().filter(|&n| n > 0)
}

/// The MAC address of `iface`.
pub fn mac_of(iface: &str) -> Option<Mac> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).ok()?;
    parse_mac(s.trim())
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// Whether an XDP program is attached to `iface` (`None` when the interface does not
/// exist): for tests and diagnostics.
pub fn xdp_attached(iface: &str) -> Option<bool> {
    let i = sys::ifindex(iface)?;
    Some(sys::attached_program(i).is_some())
}

// ---- The port -----------------------------------------------------------------

/// One socket of a port: which interface and queue, and where its frames go.
#[derive(Clone, Debug)]
struct SockInfo {
    /// Interface slot (0 or 1).
    iface: usize,
    queue: u32,
    /// The value put in [`RxFrame::ifindex`].
    ifindex: u16,
    /// The socket frames received here are sent on.
    peer: usize,
}

/// A worker's AF_XDP port: its sockets on both interfaces and their shared UMEM.
#[derive(Debug)]
pub struct XskPort {
    frames: sys::Frames,
    socks: Vec<SockInfo>,
    /// Per batch frame: the socket it came from (< [`sys::MAX_SOCKETS`]).
    from: Vec<u8>,
    /// Per socket: batch indices to transmit on it (scratch).
    out: Vec<Vec<u16>>,
    /// The socket served first: rotates each batch, for receiving and refilling.
    next_first: usize,
    counters: Vec<QueueCounters>,
    /// Rewrite per egress interface: (source, destination) MAC.
    rewrite: Option<[(Mac, Mac); 2]>,
    busy_poll: bool,
    clock: Clock,
    /// With a flow offload: what a policy publication signals, so that a sleeping
    /// worker takes the generation (and tells its XDP program) at once.
    wakeup: Option<Arc<sys::Wakeup>>,
}

/// The port's clock: monotonic nanoseconds since the run started, plus `base_ns`
/// (never 0). `base_ns` is the wall time of the start modulo the export interval, so
/// the worker's interval boundaries (multiples of the interval on this clock) fall
/// on the flow-log aggregator's wall-clock ones once records get the wall offset.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: Instant,
    base_ns: u64,
    /// CLOCK_MONOTONIC at `start` (the XDP program's clock).
    mono_start_ns: u64,
}

impl Clock {
    /// A clock starting now, and the offset that turns its times into wall time.
    fn start(export_interval_ns: Option<u64>) -> (Clock, u64) {
        let start = Instant::now();
        let mono_start_ns = sys::monotonic_ns();
        let wall = wall_ns();
        let base_ns = export_interval_ns
            .filter(|&iv| iv > 0)
            .map_or(0, |iv| wall % iv)
            .max(1);
        (
            Clock {
                start,
                base_ns,
                mono_start_ns,
            },
            wall.saturating_sub(base_ns),
        )
    }

    /// A CLOCK_MONOTONIC time (the XDP program's) on this clock (0 stays 0).
    fn monotonic_to_port(&self, ns: u64) -> u64 {
        if ns == 0 {
            return 0;
        }
        ns.saturating_sub(self.mono_start_ns)
            .saturating_add(self.base_ns)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(self.base_ns)
    }
}

impl XskPort {
    fn new(
        frames: sys::Frames,
        socks: Vec<SockInfo>,
        rewrite: Option<[(Mac, Mac); 2]>,
        batch: usize,
        busy_poll: bool,
        clock: Clock,
    ) -> Self {
        let n = socks.len();
        XskPort {
            frames,
            socks,
            from: vec![0; batch],
            out: (0..n).map(|_| Vec::with_capacity(batch)).collect(),
            next_first: 0,
            counters: vec![QueueCounters::default(); n],
            rewrite,
            busy_poll,
            clock,
            wakeup: None,
        }
    }

    /// Waits for traffic (or `timeout`), unless busy polling.
    fn wait(&mut self, timeout: Duration) {
        if self.busy_poll {
            for i in 0..self.socks.len() {
                self.frames.kick(i);
            }
        } else {
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            self.frames.wait(ms, self.wakeup.as_deref());
        }
    }

    fn kernel(&self, i: usize) -> KernelCounters {
        self.frames
            .kernel_stats(i)
            .map(|s| KernelCounters {
                rx_dropped: s.rx_dropped(),
                rx_ring_full: s.rx_ring_full(),
                rx_fill_ring_empty: s.rx_fill_ring_empty_descs(),
                tx_ring_empty: s.tx_ring_empty_descs(),
                invalid_descs: s.rx_invalid_descs() + s.tx_invalid_descs(),
            })
            .unwrap_or_default()
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The value a frame's [`RxFrame::ifindex`] (and so its flow key) carries for
/// interface `name`: the kernel's ifindex, which must fit in 16 bits so that two
/// interfaces never share one.
fn key_ifindex(name: &str, ifindex: u32) -> Result<u16, AfXdpError> {
    u16::try_from(ifindex).map_err(|_| {
        AfXdpError::Config(format!(
            "interface {name} has ifindex {ifindex}; flow keys hold at most {}: \
             recreate the interface with a smaller index (ip link add ... index N)",
            u16::MAX
        ))
    })
}

impl Port for XskPort {
    // Frames of their own (one call per batch), so profiles attribute time to them.
    #[inline(never)]
    fn rx_batch(&mut self, out: &mut [RxFrame]) -> Rx {
        // The worker hands back every frame of a batch; anything left is freed here.
        self.frames.new_batch();
        let k = self.socks.len();
        for j in 0..k {
            let i = (self.next_first + j) % k;
            self.frames.reap(i);
            if !self.frames.refill(i)
                && let Some(c) = self.counters.get_mut(i)
            {
                c.fill_ring_empty += 1;
            }
        }
        if self.busy_poll {
            // Drive the drivers' NAPI from here, every batch: with
            // SO_PREFER_BUSY_POLL the kernel then leaves it to this thread instead of
            // running it in softirq context on whatever core the frames arrived.
            for j in 0..k {
                self.frames.poll_napi((self.next_first + j) % k);
            }
        }
        let max = out.len().min(self.from.len());
        let mut got = 0;
        let mut ts = 0;
        for j in 0..k {
            if got >= max {
                break;
            }
            let s = (self.next_first + j) % k;
            let (start, n) = self.frames.receive(s, max - got);
            if n == 0 {
                continue;
            }
            if ts == 0 {
                ts = self.clock.now_ns();
            }
            let ifindex = self.socks.get(s).map_or(0, |x| x.ifindex);
            for t in 0..n {
                let h = start + t;
                let len = self.frames.data(h).len();
                if let Some(o) = out.get_mut(got + t) {
                    *o = RxFrame {
                        handle: h as u64,
                        ts_ns: ts,
                        wire_len: u32::try_from(len).unwrap_or(u32::MAX),
                        ifindex,
                    };
                }
                if let Some(f) = self.from.get_mut(h) {
                    *f = s as u8;
                }
            }
            if let Some(c) = self.counters.get_mut(s) {
                c.rx += n as u64;
            }
            got += n;
        }
        self.next_first = (self.next_first + 1) % k.max(1);
        if got == 0 { Rx::Idle } else { Rx::Frames(got) }
    }

    fn data(&self, frame: &RxFrame) -> &[u8] {
        self.frames.data(frame.handle as usize)
    }

    #[inline(never)]
    fn tx_batch(&mut self, frames: &[RxFrame]) {
        for o in &mut self.out {
            o.clear();
        }
        for f in frames {
            let h = f.handle as usize;
            let Some(&s) = self.from.get(h) else {
                continue;
            };
            let Some(peer) = self.socks.get(usize::from(s)).map(|x| x.peer) else {
                continue;
            };
            if let (Some(rw), Some(info)) = (&self.rewrite, self.socks.get(peer))
                && let Some(&(src, dst)) = rw.get(info.iface)
            {
                let d = self.frames.data_mut(h);
                if let Some(hdr) = d.get_mut(..12) {
                    hdr[..6].copy_from_slice(&dst);
                    hdr[6..].copy_from_slice(&src);
                }
            }
            if let Some(o) = self.out.get_mut(peer)
                && o.len() < o.capacity()
            {
                o.push(h as u16);
            } else {
                self.frames.release(h);
            }
        }
        for e in 0..self.out.len() {
            let Some(idx) = self.out.get(e) else { continue };
            if idx.is_empty() {
                continue;
            }
            let want = idx.len();
            let sent = self.frames.transmit(e, idx);
            if let Some(c) = self.counters.get_mut(e) {
                c.tx += sent as u64;
                c.tx_ring_full += (want - sent) as u64;
            }
        }
    }

    fn drop_batch(&mut self, frames: &[RxFrame]) {
        for f in frames {
            self.frames.release(f.handle as usize);
        }
    }
}

// ---- Flow offload -----------------------------------------------------------------

/// A worker's handle on the offload maps: installs and reads both directions of a
/// connection (see the module docs).
#[derive(Debug)]
struct XskOffload {
    maps: sys::OffloadMaps,
    /// The kernel ifindexes of interface slots 0 and 1 (the devmap's keys).
    ifindex: [u32; 2],
    /// Router mode: (source, destination) MAC per egress slot.
    rewrite: Option<[(Mac, Mac); 2]>,
    /// This worker's number: the owner written into its entries, and its slot of
    /// the per-worker generations.
    worker: u16,
    clock: Clock,
}

/// The offload map key of a packet from `src`:`sport` to `dst`:`dport` arriving on
/// `ifindex` (addresses as in [`FlowKey`]; ports in host order).
fn offload_key(
    ifindex: u32,
    family: Family,
    proto: u8,
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
) -> sys::OffloadKey {
    let addr = |a: u128| {
        let mut b = [0u8; 16];
        match family {
            Family::V4 => b[..4].copy_from_slice(&(a as u32).to_be_bytes()),
            Family::V6 => b = a.to_be_bytes(),
        }
        b
    };
    sys::OffloadKey {
        ifindex,
        family: match family {
            Family::V4 => 4,
            Family::V6 => 6,
        },
        proto,
        zero: 0,
        src: addr(src),
        dst: addr(dst),
        sport: sport.to_be_bytes(),
        dport: dport.to_be_bytes(),
    }
}

impl XskOffload {
    /// Both directions' keys and egress slots: `[initiator's, responder's]`.
    fn keys(&self, k: &FlowKey) -> Option<[(sys::OffloadKey, u32); 2]> {
        let i = u32::from(k.ifindex);
        let from = self.ifindex.iter().position(|&x| x == i)?;
        let to = 1 - from;
        let fwd = offload_key(i, k.family, k.proto, k.src, k.dst, k.sport, k.dport);
        let rev = offload_key(
            self.ifindex[to],
            k.family,
            k.proto,
            k.dst,
            k.src,
            k.dport,
            k.sport,
        );
        Some([(fwd, to as u32), (rev, from as u32)])
    }

    fn counters(&self, v: Option<sys::OffloadValue>) -> Option<OffloadCounters> {
        v.map(|v| OffloadCounters {
            packets: v.packets,
            bytes: v.bytes,
            last_ns: self.clock.monotonic_to_port(v.last_ns),
        })
    }
}

impl FlowOffload for XskOffload {
    fn install(&mut self, key: &FlowKey, generation: u32, replace: bool) -> Install {
        let Some(keys) = self.keys(key) else {
            return Install::Refused;
        };
        let how = if replace {
            sys::Insert::Replace
        } else {
            sys::Insert::IfAbsent
        };
        for (n, (k, egress)) in keys.iter().enumerate() {
            let (src_mac, dst_mac) = self
                .rewrite
                .and_then(|r| r.get(*egress as usize).copied())
                .unwrap_or_default();
            let v = sys::OffloadValue {
                generation,
                egress: *egress,
                src_mac,
                dst_mac,
                rewrite: u16::from(self.rewrite.is_some()),
                owner: self.worker,
                ..sys::OffloadValue::default()
            };
            if let Err(e) = self.maps.insert(k, &v, how) {
                // Never half installed; what another worker installed stays.
                let ours = if replace { &keys[..] } else { &keys[..n] };
                for (k, _) in ours {
                    self.maps.take(k);
                }
                return if e.raw_os_error() == Some(libc::EEXIST) {
                    Install::HeldElsewhere
                } else {
                    Install::Refused
                };
            }
        }
        Install::Done
    }

    fn read(&mut self, key: &FlowKey) -> [Option<OffloadCounters>; 2] {
        match self.keys(key) {
            Some(keys) => keys.map(|(k, _)| self.counters(self.maps.lookup(&k))),
            None => [None, None],
        }
    }

    fn remove(&mut self, key: &FlowKey) -> [Option<OffloadCounters>; 2] {
        match self.keys(key) {
            Some(keys) => keys.map(|(k, _)| self.counters(self.maps.take(&k))),
            None => [None, None],
        }
    }

    fn publish_generation(&mut self, generation: u32) {
        // This worker's slot only: its entries, no one else's, go stale.
        let _ = self.maps.set_generation(self.worker, generation);
    }
}

// ---- Live counters --------------------------------------------------------------

/// One socket's live counters (atomics written by its worker only).
#[derive(Debug, Default)]
pub struct LiveQueue {
    /// Interface slot (0 or 1).
    pub iface: usize,
    /// Queue id.
    pub queue: u32,
    rx: AtomicU64,
    tx: AtomicU64,
    tx_ring_full: AtomicU64,
    fill_ring_empty: AtomicU64,
    k_rx_dropped: AtomicU64,
    k_rx_ring_full: AtomicU64,
    k_fill_empty: AtomicU64,
    k_tx_empty: AtomicU64,
    k_invalid: AtomicU64,
}

/// A worker's live counters: written by the worker (relaxed stores of monotonic
/// values, no lock), read by anyone.
#[derive(Debug, Default)]
pub struct LiveWorker {
    /// Worker number.
    pub worker: usize,
    /// The core it is pinned to.
    pub core: Option<usize>,
    /// The scheduling policy in effect: set once by the worker (true = SCHED_FIFO).
    fifo: AtomicBool,
    rx: AtomicU64,
    forwarded: AtomicU64,
    dropped_policy: AtomicU64,
    dropped_parse: AtomicU64,
    non_ip_passed: AtomicU64,
    batches: AtomicU64,
    lat_p50: AtomicU64,
    lat_p90: AtomicU64,
    lat_p99: AtomicU64,
    lat_p999: AtomicU64,
    lat_max: AtomicU64,
    flows: AtomicU64,
    flow_capacity: AtomicU64,
    evictions: AtomicU64,
    insert_failures: AtomicU64,
    generation: AtomicU64,
    records_dropped: AtomicU64,
    pending_deny: AtomicU64,
    offloaded: AtomicU64,
    /// Set once by the worker: it has an offload (the `off_*` counters are its).
    offload_on: AtomicBool,
    off_bytes: AtomicU64,
    off_installs: AtomicU64,
    off_install_failures: AtomicU64,
    off_held_elsewhere: AtomicU64,
    off_removals: AtomicU64,
    queues: Vec<LiveQueue>,
}

impl LiveWorker {
    fn new(worker: usize, core: Option<usize>, socks: &[SockInfo]) -> Self {
        LiveWorker {
            worker,
            core,
            queues: socks
                .iter()
                .map(|s| LiveQueue {
                    iface: s.iface,
                    queue: s.queue,
                    ..LiveQueue::default()
                })
                .collect(),
            ..LiveWorker::default()
        }
    }

    fn publish<C: Classify>(&self, w: &Worker<C>, port: &XskPort) {
        let r = Ordering::Relaxed;
        let s = w.stats();
        let policy = s.outcome[1][0].packets + s.outcome[1][1].packets;
        self.rx.store(s.rx.packets, r);
        self.forwarded.store(s.forwarded.packets, r);
        self.dropped_policy.store(policy, r);
        self.dropped_parse
            .store(s.dropped.packets.saturating_sub(policy), r);
        self.non_ip_passed.store(s.unparsed_passed, r);
        self.pending_deny
            .store(s.outcome[0][1].packets + s.outcome[1][1].packets, r);
        self.batches.store(s.batches, r);
        let h = w.latency();
        if !h.is_empty() {
            self.lat_p50.store(h.value_at_quantile(0.5), r);
            self.lat_p90.store(h.value_at_quantile(0.9), r);
            self.lat_p99.store(h.value_at_quantile(0.99), r);
            self.lat_p999.store(h.value_at_quantile(0.999), r);
            self.lat_max.store(h.max(), r);
        }
        let t = w.flow_table();
        self.flows.store(t.len() as u64, r);
        self.flow_capacity.store(t.capacity() as u64, r);
        self.evictions.store(s.flows.evictions, r);
        self.insert_failures.store(s.flows.insert_failures, r);
        self.generation.store(u64::from(w.generation()), r);
        self.records_dropped.store(s.records_dropped, r);
        self.offloaded.store(s.offloaded.packets, r);
        if let Some(o) = w.offload_stats() {
            self.offload_on.store(true, r);
            self.off_bytes.store(o.bytes, r);
            self.off_installs.store(o.installs, r);
            self.off_install_failures.store(o.install_failures, r);
            self.off_held_elsewhere.store(o.held_elsewhere, r);
            self.off_removals.store(o.removals, r);
        }
        for (i, q) in self.queues.iter().enumerate() {
            let c = port.counters.get(i).copied().unwrap_or_default();
            q.rx.store(c.rx, r);
            q.tx.store(c.tx, r);
            q.tx_ring_full.store(c.tx_ring_full, r);
            q.fill_ring_empty.store(c.fill_ring_empty, r);
            let k = port.kernel(i);
            q.k_rx_dropped.store(k.rx_dropped, r);
            q.k_rx_ring_full.store(k.rx_ring_full, r);
            q.k_fill_empty.store(k.rx_fill_ring_empty, r);
            q.k_tx_empty.store(k.tx_ring_empty, r);
            q.k_invalid.store(k.invalid_descs, r);
        }
    }

    /// Reads the counters (each value as last published; no lock).
    pub fn snapshot(&self) -> WorkerSnapshot {
        let r = Ordering::Relaxed;
        WorkerSnapshot {
            worker: self.worker,
            core: self.core,
            sched: if self.fifo.load(r) {
                Sched::Fifo
            } else {
                Sched::Other
            },
            rx: self.rx.load(r),
            forwarded: self.forwarded.load(r),
            dropped_policy: self.dropped_policy.load(r),
            dropped_parse: self.dropped_parse.load(r),
            non_ip_passed: self.non_ip_passed.load(r),
            pending_deny: self.pending_deny.load(r),
            batches: self.batches.load(r),
            latency_ns: [
                self.lat_p50.load(r),
                self.lat_p90.load(r),
                self.lat_p99.load(r),
                self.lat_p999.load(r),
                self.lat_max.load(r),
            ],
            flows: self.flows.load(r),
            flow_capacity: self.flow_capacity.load(r),
            evictions: self.evictions.load(r),
            insert_failures: self.insert_failures.load(r),
            generation: self.generation.load(r),
            records_dropped: self.records_dropped.load(r),
            offloaded: self.offloaded.load(r),
            offload: self.offload_on.load(r).then(|| OffloadStats {
                packets: self.offloaded.load(r),
                bytes: self.off_bytes.load(r),
                installs: self.off_installs.load(r),
                install_failures: self.off_install_failures.load(r),
                held_elsewhere: self.off_held_elsewhere.load(r),
                removals: self.off_removals.load(r),
            }),
            queues: self
                .queues
                .iter()
                .map(|q| QueueSnapshot {
                    iface: q.iface,
                    queue: q.queue,
                    port: QueueCounters {
                        rx: q.rx.load(r),
                        tx: q.tx.load(r),
                        tx_ring_full: q.tx_ring_full.load(r),
                        fill_ring_empty: q.fill_ring_empty.load(r),
                    },
                    kernel: KernelCounters {
                        rx_dropped: q.k_rx_dropped.load(r),
                        rx_ring_full: q.k_rx_ring_full.load(r),
                        rx_fill_ring_empty: q.k_fill_empty.load(r),
                        tx_ring_empty: q.k_tx_empty.load(r),
                        invalid_descs: q.k_invalid.load(r),
                    },
                })
                .collect(),
        }
    }
}

// ---- The run ------------------------------------------------------------------

/// What [`start`] set up, per interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Name.
    pub name: String,
    /// Kernel ifindex.
    pub ifindex: u32,
    /// How the XDP program is attached.
    pub xdp: XdpMode,
    /// How the sockets are bound (of the first socket; all are bound alike).
    pub bind: CopyMode,
    /// Copy mode: frames one `sendto` sends (32, or the tx ring's size on kernels
    /// with XDP_MAX_TX_SKB_BUDGET).
    pub tx_budget: u32,
}

/// A running data plane. Dropping it without [`Running::stop`] stops it too.
#[derive(Debug)]
pub struct Running {
    /// Live counters, one per worker.
    pub live: Vec<Arc<CachePadded<LiveWorker>>>,
    /// The interfaces.
    pub ifaces: Vec<IfaceInfo>,
    /// The scheduling policy each worker runs with.
    pub sched: Vec<Sched>,
    /// Why a worker runs with `Sched::Other` although `Fifo` was asked for.
    pub sched_note: Option<String>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<WorkerReport>>,
    /// Dropped after the workers: detaches the XDP programs.
    programs: Vec<sys::XdpProgram>,
}

impl Running {
    /// Snapshots of every worker's counters.
    pub fn snapshot(&self) -> Vec<WorkerSnapshot> {
        self.live.iter().map(|l| l.snapshot()).collect()
    }

    /// Asks the workers to stop (they drain their flow tables into final records).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether every worker has ended.
    pub fn finished(&self) -> bool {
        self.handles.iter().all(JoinHandle::is_finished)
    }

    /// Stops the workers, waits for them and detaches the XDP programs. Returns the
    /// worker reports (an error names a worker that panicked).
    pub fn stop(mut self) -> Result<Vec<WorkerReport>, String> {
        self.request_stop();
        let mut reports = Vec::new();
        let mut err = None;
        for (k, h) in std::mem::take(&mut self.handles).into_iter().enumerate() {
            match h.join() {
                Ok(r) => reports.push(r),
                Err(_) => err = Some(format!("worker {k} panicked")),
            }
        }
        self.programs.clear();
        match err {
            Some(e) => Err(e),
            None => Ok(reports),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in std::mem::take(&mut self.handles) {
            let _ = h.join();
        }
    }
}

/// Checks what a run needs before touching anything: capabilities, memlock, the
/// interfaces and their queues, no foreign XDP program. Returns the ifindexes.
pub fn preflight(cfg: &AfXdpConfig) -> Result<[u32; 2], AfXdpError> {
    if cfg.ifaces[0] == cfg.ifaces[1] {
        return Err(AfXdpError::Config(format!(
            "the two interfaces must differ (both are {:?})",
            cfg.ifaces[0]
        )));
    }
    if cfg.queues == 0 || cfg.workers == 0 || cfg.workers > cfg.queues as usize {
        return Err(AfXdpError::Config(format!(
            "--workers {} must be between 1 and --queues {} (each worker owns whole queues)",
            cfg.workers, cfg.queues
        )));
    }
    let per_worker = (cfg.queues as usize).div_ceil(cfg.workers);
    if per_worker * 2 > sys::MAX_SOCKETS {
        return Err(AfXdpError::Config(format!(
            "at most {} queues per worker (--queues {} with --workers {})",
            sys::MAX_SOCKETS / 2,
            cfg.queues,
            cfg.workers
        )));
    }
    let missing = missing_capabilities();
    if !missing.is_empty() {
        return Err(AfXdpError::Capabilities {
            missing: missing.join(", "),
        });
    }
    let needed = u64::from(cfg.queues) * 2 * u64::from(sys::FRAMES_PER_SOCKET * sys::FRAME_SIZE);
    // With CAP_IPC_LOCK the kernel does not charge UMEM pages to RLIMIT_MEMLOCK (and
    // BPF maps are charged to the memory cgroup since Linux 5.11).
    let ipc_lock = effective_caps().is_some_and(|c| c & (1u64 << CAP_IPC_LOCK) != 0);
    match sys::raise_memlock() {
        Ok(None) => {}
        Ok(Some(_)) | Err(_) if ipc_lock => {}
        Ok(Some(limit)) if limit >= needed + (1 << 20) => {}
        Ok(Some(limit)) => {
            return Err(AfXdpError::Memlock {
                limit,
                needed,
                reason: "not permitted".into(),
            });
        }
        Err(e) => {
            return Err(AfXdpError::Memlock {
                limit: 0,
                needed,
                reason: e.to_string(),
            });
        }
    }
    let mut idx = [0u32; 2];
    for (i, name) in cfg.ifaces.iter().enumerate() {
        let ix = sys::ifindex(name).ok_or_else(|| AfXdpError::NoInterface(name.clone()))?;
        key_ifindex(name, ix)?;
        if let Some(available) = rx_queues(name)
            && available < cfg.queues
        {
            return Err(AfXdpError::NoQueue {
                iface: name.clone(),
                available,
                queues: cfg.queues,
                missing: available,
            });
        }
        if let Some(id) = sys::attached_program(ix) {
            return Err(AfXdpError::Busy {
                iface: name.clone(),
                id,
            });
        }
        idx[i] = ix;
    }
    if let Forwarding::Router { .. } = cfg.forwarding {
        for name in &cfg.ifaces {
            if mac_of(name).is_none() {
                return Err(AfXdpError::Config(format!(
                    "cannot read the MAC address of {name} (/sys/class/net/{name}/address)"
                )));
            }
        }
    }
    Ok(idx)
}

/// Starts a live run: checks ([`preflight`]), loads the XDP programs, opens the
/// sockets, starts the pinned workers and attaches the programs. Flow records go to
/// `records` (a bounded channel the caller drains).
pub fn start<C: Classify + Send + Sync + 'static>(
    cfg: &AfXdpConfig,
    slot: Arc<ClassifierSlot<C>>,
    records: Sender<FlowRecord>,
) -> Result<Running, AfXdpError> {
    let idx = preflight(cfg)?;
    let batch = cfg.batch.clamp(1, MAX_BATCH);
    let ip_only = matches!(cfg.forwarding, Forwarding::Router { .. });
    let rewrite = match cfg.forwarding {
        Forwarding::Wire => None,
        Forwarding::Router { next_hop } => {
            let own = |i: usize| mac_of(&cfg.ifaces[i]).unwrap_or_default();
            Some([(own(0), next_hop[0]), (own(1), next_hop[1])])
        }
    };
    let mut wcfg = cfg.worker;
    wcfg.batch = batch;
    wcfg.unparsed.non_ip = match cfg.forwarding {
        Forwarding::Wire => Disposition::Pass,
        Forwarding::Router { .. } => Disposition::Drop,
    };
    let mut programs = Vec::with_capacity(2);
    let mut offload_maps: Option<sys::OffloadMaps> = None;
    for (i, name) in cfg.ifaces.iter().enumerate() {
        let entries = rx_queues(name).unwrap_or(cfg.queues).max(cfg.queues);
        let prog = if cfg.offload {
            // Both directions of every connection a worker's table can hold.
            let flows = u32::try_from(cfg.worker.flow.capacity.saturating_mul(2 * cfg.workers))
                .unwrap_or(u32::MAX)
                .clamp(1024, 1 << 22);
            let workers = u32::try_from(cfg.workers).unwrap_or(u32::MAX);
            let (p, maps) = sys::XdpProgram::load_offload(
                idx[i],
                entries,
                flows,
                workers,
                offload_maps.as_ref(),
            )
            .map_err(|e| AfXdpError::Setup(format!("{name}: {e}")))?;
            if offload_maps.is_none() {
                maps.set_cfg(ip_only).map_err(AfXdpError::Setup)?;
                for (slot, ix) in idx.iter().enumerate() {
                    maps.set_tx(slot as u32, *ix).map_err(AfXdpError::Setup)?;
                }
                offload_maps = Some(maps);
            }
            p
        } else {
            sys::XdpProgram::load(idx[i], entries, ip_only)
                .map_err(|e| AfXdpError::Setup(format!("{name}: {e}")))?
        };
        programs.push(prog);
    }
    let cores: Vec<core_affinity::CoreId> = {
        let all = core_affinity::get_core_ids().unwrap_or_default();
        if cfg.cores.is_empty() {
            all
        } else {
            cfg.cores
                .iter()
                .map(|&id| core_affinity::CoreId { id })
                .collect()
        }
    };
    // Every worker's sockets, flow table and scratch first, so an error leaves
    // nothing attached or running.
    let (clock, wall_offset) = Clock::start(wcfg.export_interval_ns);
    let mut ports = Vec::with_capacity(cfg.workers);
    let mut ifaces: Vec<IfaceInfo> = Vec::new();
    for w in 0..cfg.workers {
        let mut specs = Vec::new();
        let mut socks = Vec::new();
        for q in (0..cfg.queues).filter(|q| *q as usize % cfg.workers == w) {
            for (i, name) in cfg.ifaces.iter().enumerate() {
                let me = socks.len();
                specs.push(sys::SocketSpec {
                    ifname: name.clone(),
                    queue: q,
                });
                socks.push(SockInfo {
                    iface: i,
                    queue: q,
                    ifindex: key_ifindex(name, idx[i])?,
                    // Sockets come in (iface 0, iface 1) pairs per queue.
                    peer: if i == 0 { me + 1 } else { me - 1 },
                });
            }
        }
        let frames = sys::Frames::open(&specs, batch, cfg.force_copy).map_err(AfXdpError::Setup)?;
        if cfg.busy_poll {
            frames
                .busy_poll(20, i32::try_from(batch).unwrap_or(64))
                .map_err(AfXdpError::Setup)?;
        }
        for (k, s) in socks.iter().enumerate() {
            let fd = frames
                .fd(k)
                .ok_or_else(|| AfXdpError::Setup("socket missing".into()))?;
            programs[s.iface]
                .register(s.queue, fd)
                .map_err(|e| AfXdpError::Setup(format!("{}: {e}", cfg.ifaces[s.iface])))?;
        }
        if w == 0 {
            for (i, name) in cfg.ifaces.iter().enumerate() {
                ifaces.push(IfaceInfo {
                    name: name.clone(),
                    ifindex: idx[i],
                    xdp: XdpMode::Generic,
                    bind: frames.mode(i).unwrap_or(CopyMode::Copy),
                    tx_budget: frames.tx_budget(i).unwrap_or(32),
                });
            }
        }
        debug_assert_eq!(frames.sockets(), socks.len());
        let core = (!cores.is_empty()).then(|| cores[w % cores.len()]);
        let records = RecordOut::channel(records.clone()).with_time_offset(wall_offset);
        let mut worker = Worker::try_new(wcfg, Arc::clone(&slot), records)
            .map_err(|e| AfXdpError::Setup(format!("worker {w}: flow table: {e}")))?;
        if let Some(maps) = &offload_maps {
            let off = XskOffload {
                maps: maps.try_clone().map_err(AfXdpError::Setup)?,
                ifindex: idx,
                rewrite,
                worker: u16::try_from(w).map_err(|_| {
                    AfXdpError::Setup("flow offload takes at most 65536 workers".into())
                })?,
                clock,
            };
            worker = worker.with_offload(Box::new(off));
        }
        let mut port = XskPort::new(frames, socks, rewrite, batch, cfg.busy_poll, clock);
        // An offloading worker that sleeps is woken by each publication: it does
        // not count as having taken a generation while asleep (its XDP program
        // forwards under its last one), so a change would wait out its sleep.
        if offload_maps.is_some() && !cfg.busy_poll {
            let wake = Arc::new(sys::Wakeup::new().map_err(|e| {
                AfXdpError::Setup(format!("worker {w}: cannot create its eventfd: {e}"))
            })?);
            let signal = Arc::clone(&wake);
            slot.wake_with(Waker(Arc::new(move || signal.signal())));
            port.wakeup = Some(wake);
        }
        ports.push((port, worker, core));
    }
    for (i, p) in programs.iter_mut().enumerate() {
        let mode = p
            .attach(cfg.generic_xdp)
            .map_err(|e| AfXdpError::Setup(format!("{}: {e}", cfg.ifaces[i])))?;
        if let Some(info) = ifaces.get_mut(i) {
            info.xdp = mode;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut live = Vec::with_capacity(ports.len());
    let mut handles = Vec::with_capacity(ports.len());
    let want = if cfg.busy_poll {
        Sched::Other
    } else {
        cfg.sched
    };
    let mut sched = Vec::with_capacity(ports.len());
    let mut sched_note = None;
    for (w, (mut port, worker, core)) in ports.into_iter().enumerate() {
        let l = Arc::new(CachePadded::new(LiveWorker::new(
            w,
            core.map(|c| c.id),
            &port.socks,
        )));
        live.push(Arc::clone(&l));
        let stop = Arc::clone(&stop);
        // The worker sets its own policy and says how that went before it polls.
        let (told, outcome) = std::sync::mpsc::sync_channel(1);
        let h = std::thread::Builder::new()
            .name(format!("tiergate-xsk-{w}"))
            .spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let got = match want {
                    Sched::Fifo => sys::set_fifo(1).map(|()| Sched::Fifo).map_err(|e| {
                        format!("SCHED_FIFO refused ({e}; needs CAP_SYS_NICE): normal scheduling")
                    }),
                    Sched::Other => Ok(Sched::Other),
                };
                let fifo = matches!(got, Ok(Sched::Fifo));
                l.fifo.store(fifo, Ordering::Relaxed);
                let spins = if fifo { 0 } else { IDLE_SPINS };
                let _ = told.send(got);
                worker_loop(worker, &mut port, &l, &stop, spins)
            })
            .map_err(|e| AfXdpError::Setup(format!("cannot start worker {w}: {e}")))?;
        handles.push(h);
        match outcome.recv() {
            Ok(Ok(s)) => sched.push(s),
            Ok(Err(note)) => {
                sched.push(Sched::Other);
                sched_note = Some(note);
            }
            Err(_) => sched.push(Sched::Other),
        }
    }
    Ok(Running {
        live,
        ifaces,
        sched,
        sched_note,
        stop,
        handles,
        programs,
    })
}

/// How often a worker publishes its counters (at least; see the module docs).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Empty polls before an idle worker runs housekeeping and (without busy polling)
/// sleeps in `poll(2)`, under `Sched::Other` (a SCHED_FIFO worker sleeps at once:
/// spinning would keep the kernel from filling its rings on a shared core).
const IDLE_SPINS: u32 = 256;
/// The longest an idle worker sleeps.
const IDLE_SLEEP: Duration = Duration::from_millis(10);

fn worker_loop<C: Classify>(
    mut w: Worker<C>,
    port: &mut XskPort,
    live: &LiveWorker,
    stop: &AtomicBool,
    spins: u32,
) -> WorkerReport {
    let mut idle = 0u32;
    let mut last_pub = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let sleep = match w.poll(port) {
            Rx::Frames(_) => {
                idle = 0;
                false
            }
            Rx::Idle | Rx::End => {
                idle += 1;
                if idle < spins {
                    continue;
                }
                idle = 0;
                w.idle(port.clock.now_ns());
                true
            }
        };
        if last_pub.elapsed() >= PUBLISH_EVERY {
            live.publish(&w, port);
            last_pub = Instant::now();
        }
        if sleep {
            // A sleeping worker takes the newest generation when it wakes, before it
            // processes anything: a change need not wait the sleep out.
            if !port.busy_poll {
                w.asleep();
            }
            port.wait(IDLE_SLEEP);
        }
    }
    // The final counters include the drain: every connection's final record, and
    // what the offload forwarded until each left it.
    w.drain_flows();
    live.publish(&w, port);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_keys_have_the_xdp_programs_layout() {
        // struct tg_key of offload.bpf.c: ifindex, family, proto, 0, addresses as on
        // the wire (IPv4 in the first 4 bytes), ports in network order.
        let k = offload_key(7, Family::V4, 17, 0x0a4d_0001, 0x0a4d_0002, 40000, 5353);
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[10, 77, 0, 1]);
        assert_eq!((k.ifindex, k.family, k.proto, k.zero), (7, 4, 17, 0));
        assert_eq!(k.src, src);
        assert_eq!(k.dst[..4], [10, 77, 0, 2]);
        assert_eq!(k.sport, [0x9c, 0x40]);
        assert_eq!(k.dport, [0x14, 0xe9]);
        let a: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0001;
        let k = offload_key(3, Family::V6, 6, a, 1, 1, 2);
        assert_eq!(k.family, 6);
        assert_eq!(k.src, a.to_be_bytes());
        assert_eq!(k.dst[15], 1);
        // The C structs' sizes (44 and 48 bytes, no padding) are asserted in `sys`.
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("02:00:0a:4d:01:ff"),
            Some([2, 0, 0x0a, 0x4d, 1, 0xff])
        );
        assert_eq!(parse_mac("02:00:0a:4d:01"), None);
        assert_eq!(parse_mac("02:00:0a:4d:01:ff:00"), None);
        assert_eq!(parse_mac("zz:00:0a:4d:01:ff"), None);
    }

    #[test]
    fn bad_option_combinations_are_refused_before_anything_else() {
        let cfg = AfXdpConfig {
            ifaces: ["a0".into(), "a0".into()],
            ..AfXdpConfig::default()
        };
        assert!(matches!(preflight(&cfg), Err(AfXdpError::Config(_))));
        let cfg = AfXdpConfig {
            ifaces: ["a0".into(), "a1".into()],
            queues: 1,
            workers: 2,
            ..AfXdpConfig::default()
        };
        assert!(matches!(preflight(&cfg), Err(AfXdpError::Config(_))));
    }

    #[test]
    fn a_missing_interface_is_named() {
        if !missing_capabilities().is_empty() {
            eprintln!(
                "skipped: needs CAP_NET_ADMIN/CAP_NET_RAW/CAP_BPF to get past the capability check"
            );
            return;
        }
        let cfg = AfXdpConfig {
            ifaces: ["tg-no-such-if0".into(), "tg-no-such-if1".into()],
            ..AfXdpConfig::default()
        };
        match preflight(&cfg) {
            Err(AfXdpError::NoInterface(n)) => assert_eq!(n, "tg-no-such-if0"),
            other => panic!("expected NoInterface, got {other:?}"),
        }
    }

    #[test]
    fn ifindexes_that_do_not_fit_a_flow_key_are_refused() {
        assert_eq!(key_ifindex("a0", 7).unwrap(), 7);
        assert_eq!(key_ifindex("a0", 65535).unwrap(), 65535);
        match key_ifindex("veth-big", 65536) {
            Err(AfXdpError::Config(m)) => assert!(m.contains("veth-big") && m.contains("65536")),
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn preflight_refuses_an_interface_whose_ifindex_does_not_fit_a_flow_key() {
        if !missing_capabilities().is_empty() {
            eprintln!("skipped: needs CAP_NET_ADMIN/CAP_NET_RAW/CAP_BPF");
            return;
        }
        sys::tests::in_new_netns("preflight_refuses_a_big_ifindex", || {
            sys::tests::ip(&[
                "link", "add", "tgbig", "index", "70000", "type", "veth", "peer", "name", "tgsmall",
            ]);
            let cfg = AfXdpConfig {
                ifaces: ["tgsmall".into(), "tgbig".into()],
                ..AfXdpConfig::default()
            };
            match preflight(&cfg) {
                Err(AfXdpError::Config(m)) => {
                    assert!(m.contains("tgbig") && m.contains("70000"), "{m}")
                }
                other => panic!("expected a Config error, got {other:?}"),
            }
        });
    }

    #[test]
    fn the_clock_is_monotonic_and_its_intervals_fall_on_wall_clock_multiples() {
        let iv = 15_000_000_000;
        let (c, offset) = Clock::start(Some(iv));
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(a >= 1 && b >= a);
        // A multiple of the interval on the port's clock is one in wall time.
        assert_eq!((offset + 2 * iv) % iv, 0);
        let wall = wall_ns();
        assert!(wall.abs_diff(offset + c.now_ns()) < 1_000_000_000);
        let (c, offset) = Clock::start(None);
        assert!(c.now_ns() >= 1);
        assert!(wall_ns().abs_diff(offset + c.now_ns()) < 1_000_000_000);
    }

    #[test]
    fn live_counters_round_trip_without_a_worker() {
        let socks = vec![
            SockInfo {
                iface: 0,
                queue: 3,
                ifindex: 1,
                peer: 1,
            },
            SockInfo {
                iface: 1,
                queue: 3,
                ifindex: 2,
                peer: 0,
            },
        ];
        let l = LiveWorker::new(2, Some(5), &socks);
        l.rx.store(10, Ordering::Relaxed);
        l.batches.store(4, Ordering::Relaxed);
        l.queues[1].tx.store(7, Ordering::Relaxed);
        let s = l.snapshot();
        assert_eq!((s.worker, s.core, s.rx), (2, Some(5), 10));
        assert_eq!(s.frames_per_batch(), 2.5);
        assert_eq!(s.queues.len(), 2);
        assert_eq!((s.queues[1].iface, s.queues[1].queue), (1, 3));
        assert_eq!(s.queues[1].port.tx, 7);
    }
}
