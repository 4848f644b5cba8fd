//! Everything of the AF_XDP port that talks to the kernel through raw pointers: the
//! XDP program (raw BPF instructions, an XSKMAP, a BPF link), the UMEM and its rings
//! (xsk-rs, whose ring operations are `unsafe`), socket options, `poll`, memlock and
//! interface lookups. The one module of this port that may use `unsafe`; every block
//! says why it is sound.
//!
//! # Frame ownership
//!
//! [`Frames`] is the one safe wrapper around the UMEM. Every frame of the UMEM is at
//! any time in exactly one place:
//! - the *free list* (owned by userspace, no ring holds it),
//! - the current *batch* (received, owned by userspace until the worker forwards or
//!   drops it),
//! - a fill, rx, tx or completion ring (owned by the kernel, or in flight back).
//!
//! Descriptors move between these places only inside this module: the free list feeds
//! the fill rings, rx rings feed the batch, the batch feeds the tx rings or the free
//! list, completion rings feed the free list. A frame's bytes are readable or writable
//! only while it is in the batch ([`Frames::data`], [`Frames::data_mut`]), so the kernel
//! never writes memory that a slice points at. This is the whole safety argument of
//! the `unsafe` ring calls below.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::socket::{RxQueue, Socket, TxQueue, XdpStatistics};
use xsk_rs::umem::frame::FrameDesc;
use xsk_rs::umem::{CompQueue, FillQueue, Umem};

/// Descriptors per ring (fill, completion, rx, tx).
pub(super) const RING_SIZE: u32 = 2048;
/// UMEM frames per socket: enough for a full fill ring and a full rx ring.
pub(super) const FRAMES_PER_SOCKET: u32 = 2 * RING_SIZE;
/// Bytes per UMEM frame.
pub(super) const FRAME_SIZE: u32 = 4096;
/// Sockets one worker (one UMEM) may own: its queues on both interfaces. Bounds
/// [`Frames::wait`]'s poll set and the socket index kept per batch frame.
pub(super) const MAX_SOCKETS: usize = 8;

// Socket options for busy polling (include/uapi/asm-generic/socket.h; the same on
// every architecture that has AF_XDP zero-copy drivers).
const SO_BUSY_POLL: libc::c_int = 46;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
// Socket option of AF_XDP (include/uapi/linux/if_xdp.h, Linux 6.17+): the most
// frames one `sendto` turns into skbs in copy mode (default 32, TX_BATCH_SIZE).
const SOL_XDP: libc::c_int = 283;
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// How a socket was bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    /// The driver DMAs straight into the UMEM.
    ZeroCopy,
    /// The kernel copies frames between its buffers and the UMEM (veth, generic XDP).
    Copy,
}

/// One socket's rings.
#[derive(Debug)]
struct Socket1 {
    rx: RxQueue,
    tx: TxQueue,
    fq: FillQueue,
    cq: CompQueue,
    fd: RawFd,
    mode: CopyMode,
    /// Frames one `sendto` sends in copy mode (32 unless XDP_MAX_TX_SKB_BUDGET took).
    tx_budget: u32,
}

/// A socket to open: interface name and queue.
#[derive(Clone, Debug)]
pub(super) struct SocketSpec {
    /// Interface name.
    pub ifname: String,
    /// Queue id.
    pub queue: u32,
}

/// An eventfd that wakes a worker sleeping in [`Frames::wait`]: the publisher of a
/// policy generation signals it (non-blocking, close-on-exec).
#[derive(Debug)]
pub(super) struct Wakeup(OwnedFd);

impl Wakeup {
    pub(super) fn new() -> io::Result<Wakeup> {
        // SAFETY: `eventfd` takes plain integers; a non-negative result is a new
        // file descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a valid descriptor owned by no one else (just created).
        Ok(Wakeup(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wakes the sleeper (a counter at its maximum stays readable: nothing is lost).
    pub(super) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, a valid readable buffer, to the
        // eventfd; a full counter (EAGAIN) leaves it readable, which is the point.
        unsafe {
            libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8);
        }
    }

    /// Resets the counter after a wake-up.
    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into `v`, a valid writable buffer; the fd is
        // non-blocking, so an empty counter returns EAGAIN at once.
        unsafe {
            libc::read(self.0.as_raw_fd(), (&raw mut v).cast(), 8);
        }
    }
}

/// The UMEM of one worker and the sockets that share it (see the module docs for the
/// ownership rules).
#[derive(Debug)]
pub(super) struct Frames {
    umem: Umem,
    sockets: Vec<Socket1>,
    /// `free[..free_len]`: frames owned by userspace and held by no ring.
    free: Vec<FrameDesc>,
    free_len: usize,
    /// `batch[..batch_len]`: the frames of the current batch; `owned[i]` while the
    /// worker has not yet forwarded or dropped frame `i`.
    batch: Vec<FrameDesc>,
    owned: Vec<bool>,
    batch_len: usize,
    /// Scratch for one socket's tx burst.
    burst: Vec<FrameDesc>,
}

impl Frames {
    /// A UMEM with [`FRAMES_PER_SOCKET`] frames per socket, one socket per spec (all
    /// sharing the UMEM; each (interface, queue) gets its own fill and completion
    /// ring), every fill ring filled. `max_batch` bounds [`Frames::receive`].
    pub(super) fn open(
        specs: &[SocketSpec],
        max_batch: usize,
        force_copy: bool,
    ) -> Result<Self, String> {
        if specs.len() > MAX_SOCKETS {
            return Err(format!(
                "{} sockets on one UMEM: at most {MAX_SOCKETS}",
                specs.len()
            ));
        }
        let ring = QueueSize::new(RING_SIZE).map_err(|e| e.to_string())?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| e.to_string())?)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| e.to_string())?;
        let count = FRAMES_PER_SOCKET
            .checked_mul(u32::try_from(specs.len()).unwrap_or(u32::MAX))
            .and_then(std::num::NonZeroU32::new)
            .ok_or_else(|| "no sockets to open".to_string())?;
        let (umem, descs) = Umem::new(umem_cfg, count, false)
            .map_err(|e| format!("cannot create the UMEM ({count} frames): {}", chain(&e)))?;
        let mut sockets: Vec<Socket1> = Vec::with_capacity(specs.len());
        for s in specs {
            // The first socket binds the UMEM and picks zero-copy or copy; the others
            // share it (libxdp binds them with XDP_SHARED_UMEM, ignoring their own
            // flags) and the kernel gives them the first one's mode.
            let inherit = sockets.first().map(|f| f.mode);
            sockets.push(open_socket(&umem, s, force_copy, inherit)?);
        }
        // One slot per frame of the UMEM, all of them free: frames coming back are
        // written into slots, so the list never grows.
        let free = descs;
        let free_len = free.len();
        let batch = max_batch.max(1);
        let mut f = Frames {
            umem,
            sockets,
            free,
            free_len,
            batch: vec![FrameDesc::default(); batch],
            owned: vec![false; batch],
            batch_len: 0,
            burst: vec![FrameDesc::default(); batch],
        };
        for i in 0..f.sockets.len() {
            f.refill(i);
        }
        Ok(f)
    }

    /// Number of sockets.
    pub(super) fn sockets(&self) -> usize {
        self.sockets.len()
    }

    /// The file descriptor of socket `i` (for the XSKMAP).
    pub(super) fn fd(&self, i: usize) -> Option<RawFd> {
        self.sockets.get(i).map(|s| s.fd)
    }

    /// How socket `i` is bound.
    pub(super) fn mode(&self, i: usize) -> Option<CopyMode> {
        self.sockets.get(i).map(|s| s.mode)
    }

    /// The kernel's counters of socket `i`.
    pub(super) fn kernel_stats(&self, i: usize) -> Option<XdpStatistics> {
        self.sockets
            .get(i)
            .and_then(|s| s.rx.fd().xdp_statistics().ok())
    }

    /// Moves completed tx frames of socket `i` to the free list; returns how many.
    #[inline(never)]
    pub(super) fn reap(&mut self, i: usize) -> usize {
        let Some(s) = self.sockets.get_mut(i) else {
            return 0;
        };
        let room = self.free.len() - self.free_len;
        let Some(dst) = self.free.get_mut(self.free_len..) else {
            return 0;
        };
        let want = s.cq.nb_avail(u32::try_from(room).unwrap_or(u32::MAX)) as usize;
        if want == 0 {
            return 0;
        }
        let dst = &mut dst[..want.min(room)];
        // SAFETY: the completion ring hands back frames the kernel has finished
        // sending; they were produced on this UMEM's tx rings by `transmit` and are
        // written into free-list slots nobody else holds.
        let n = unsafe { s.cq.consume(dst) };
        self.free_len += n;
        n
    }

    /// Tops up the fill ring of socket `i` from the free list; kicks the kernel
    /// (need-wakeup) only when frames were posted. Returns `false` when the ring
    /// wanted frames and the free list had none at all (a fill-ring-empty event; a
    /// partial top-up is not one).
    #[inline(never)]
    pub(super) fn refill(&mut self, i: usize) -> bool {
        let Some(s) = self.sockets.get_mut(i) else {
            return true;
        };
        let room = s.fq.nb_free(RING_SIZE) as usize;
        if room == 0 {
            return true;
        }
        let n = room.min(self.free_len);
        if n == 0 {
            return false;
        }
        let start = self.free_len - n;
        let Some(src) = self.free.get(start..self.free_len) else {
            return true;
        };
        // SAFETY: the frames come off the free list (owned by userspace, held by no
        // ring) and belong to this fill ring's UMEM; `n` ≤ the free slots, so
        // `produce` takes all of them and they leave the free list.
        let done = unsafe { s.fq.produce(src) };
        self.free_len -= done;
        if done > 0 && s.fq.needs_wakeup() {
            kick_rx(s.fd);
        }
        true
    }

    /// Receives up to `max` frames from socket `i` into the batch; returns the index
    /// of the first and how many.
    #[inline(never)]
    pub(super) fn receive(&mut self, i: usize, max: usize) -> (usize, usize) {
        let start = self.batch_len;
        let Some(s) = self.sockets.get_mut(i) else {
            return (start, 0);
        };
        let end = (start + max).min(self.batch.len());
        let Some(dst) = self.batch.get_mut(start..end) else {
            return (start, 0);
        };
        if dst.is_empty() {
            return (start, 0);
        }
        // SAFETY: the rx ring hands over frames the kernel filled; they are written
        // into batch slots past `batch_len`, which hold no owned frame.
        let n = unsafe { s.rx.consume(dst) };
        for o in self.owned.iter_mut().skip(start).take(n) {
            *o = true;
        }
        self.batch_len += n;
        (start, n)
    }

    /// Starts a new batch: frames of the previous batch the worker neither forwarded
    /// nor dropped go back to the free list (returns how many; 0 when the worker
    /// handed every frame back, as it does).
    pub(super) fn new_batch(&mut self) -> usize {
        let mut lost = 0;
        for i in 0..self.batch_len {
            if self.owned.get(i).copied().unwrap_or(false) {
                self.release(i);
                lost += 1;
            }
        }
        self.batch_len = 0;
        lost
    }

    /// The bytes of batch frame `i` (empty when `i` is not an owned batch frame).
    pub(super) fn data(&self, i: usize) -> &[u8] {
        match (self.batch.get(i), self.owned.get(i)) {
            (Some(d), Some(true)) => {
                // SAFETY: an owned batch frame is held by no ring (module docs), so
                // the kernel does not write it while this shared borrow of `self`
                // lasts, and `d` is a descriptor of this UMEM.
                unsafe { self.umem.data(d) }.contents()
            }
            _ => &[],
        }
    }

    /// The bytes of batch frame `i`, writable (empty when not owned).
    pub(super) fn data_mut(&mut self, i: usize) -> &mut [u8] {
        match (self.batch.get_mut(i), self.owned.get(i)) {
            (Some(d), Some(true)) => {
                // SAFETY: as in `data`; the exclusive borrow of `self` rules out any
                // other slice of this frame.
                let mut data = unsafe { self.umem.data_mut(d) };
                let p = data.contents_mut();
                let (ptr, len) = (p.as_mut_ptr(), p.len());
                // SAFETY: `ptr..ptr+len` is the frame's data segment inside the UMEM
                // mapping, which lives as long as `self`; the returned borrow is tied
                // to `&mut self`, so nothing else touches the frame meanwhile.
                unsafe { std::slice::from_raw_parts_mut(ptr, len) }
            }
            _ => &mut [],
        }
    }

    /// Returns batch frame `i` to the free list (dropped).
    pub(super) fn release(&mut self, i: usize) {
        if let (Some(d), Some(o)) = (self.batch.get(i), self.owned.get_mut(i))
            && *o
            && let Some(slot) = self.free.get_mut(self.free_len)
        {
            *o = false;
            *slot = *d;
            self.free_len += 1;
        }
    }

    /// Sends batch frames `idx` on socket `s`. Each owned frame is staged once (it
    /// stops being owned as it is staged, so a repeated index is skipped); staged
    /// frames the tx ring has no room for go back to the free list. Returns how many
    /// were queued.
    #[inline(never)]
    pub(super) fn transmit(&mut self, s: usize, idx: &[u16]) -> usize {
        let mut n = 0;
        for &i in idx {
            let i = usize::from(i);
            if let (Some(d), Some(o), Some(b)) = (
                self.batch.get(i),
                self.owned.get_mut(i),
                self.burst.get_mut(n),
            ) && *o
            {
                *o = false;
                *b = *d;
                n += 1;
            }
        }
        let sent = match (self.sockets.get_mut(s), self.burst.get(..n)) {
            (Some(sock), Some(b)) if !b.is_empty() => {
                let room = sock.tx.nb_free(u32::try_from(n).unwrap_or(u32::MAX)) as usize;
                match b.get(..n.min(room)) {
                    Some(b) if !b.is_empty() => {
                        // SAFETY: the frames were owned batch frames of this UMEM and
                        // stopped being owned as they were staged above (each one
                        // once), so no slice, list or other ring can reach them.
                        let sent = unsafe { sock.tx.produce(b) };
                        if sent > 0 {
                            flush_tx(&mut sock.tx, sock.mode, sock.tx_budget);
                        }
                        sent
                    }
                    _ => 0,
                }
            }
            _ => 0,
        };
        // Staged frames that did not go out are dropped: back to the free list.
        for k in sent..n {
            if let (Some(d), Some(slot)) = (self.burst.get(k), self.free.get_mut(self.free_len)) {
                *slot = *d;
                self.free_len += 1;
            }
        }
        sent
    }

    /// Frames accounted for while nothing is in flight: on the free list, owned by
    /// the batch, or posted on a fill ring (tests: with every tx frame completed
    /// and reaped and the rx rings empty, this is the UMEM's frame count).
    #[cfg(test)]
    fn accounted(&mut self) -> usize {
        let owned = self.owned[..self.batch_len].iter().filter(|o| **o).count();
        let filling: usize = self
            .sockets
            .iter_mut()
            .map(|s| (RING_SIZE - s.fq.nb_free_exact()) as usize)
            .sum();
        self.free_len + owned + filling
    }

    /// Busy polling: runs socket `i`'s NAPI in this thread (`recvfrom`), so the
    /// driver's receive work lands on the worker's core before its frames are taken.
    pub(super) fn poll_napi(&self, i: usize) {
        if let Some(s) = self.sockets.get(i) {
            kick_rx(s.fd);
        }
    }

    /// Copy-mode frames one `sendto` may send on socket `i` (32, or the whole ring
    /// when the kernel took XDP_MAX_TX_SKB_BUDGET).
    pub(super) fn tx_budget(&self, i: usize) -> Option<u32> {
        self.sockets.get(i).map(|s| s.tx_budget)
    }

    /// Kicks the kernel for socket `i`: tx if it waits for a wakeup, rx (busy poll).
    pub(super) fn kick(&mut self, i: usize) {
        if let Some(s) = self.sockets.get(i) {
            if s.tx.needs_wakeup() {
                let _ = s.tx.wakeup();
            }
            kick_rx(s.fd);
        }
    }

    /// Waits up to `timeout_ms` for any socket to have frames to receive.
    pub(super) fn wait(&self, timeout_ms: i32, wakeup: Option<&Wakeup>) {
        let mut fds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; MAX_SOCKETS + 1];
        let mut n = 0;
        for (p, s) in fds.iter_mut().zip(&self.sockets) {
            p.fd = s.fd;
            p.events = libc::POLLIN;
            n += 1;
        }
        if let Some(w) = wakeup {
            fds[n].fd = w.0.as_raw_fd();
            fds[n].events = libc::POLLIN;
            n += 1;
        }
        // SAFETY: `fds[..n]` is a valid, initialised array of pollfd for the call.
        unsafe {
            libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, timeout_ms);
        }
        if let Some(w) = wakeup
            && fds[n - 1].revents & libc::POLLIN != 0
        {
            w.drain();
        }
    }

    /// Sets the busy-polling socket options on every socket.
    pub(super) fn busy_poll(&self, usecs: i32, budget: i32) -> Result<(), String> {
        for s in &self.sockets {
            setsockopt_int(s.fd, SO_PREFER_BUSY_POLL, 1)
                .and_then(|()| setsockopt_int(s.fd, SO_BUSY_POLL, usecs))
                .and_then(|()| setsockopt_int(s.fd, SO_BUSY_POLL_BUDGET, budget))
                .map_err(|e| format!("cannot enable busy polling: {e}"))?;
        }
        Ok(())
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn open_socket(
    umem: &Umem,
    spec: &SocketSpec,
    force_copy: bool,
    inherit: Option<CopyMode>,
) -> Result<Socket1, String> {
    let iface: Interface = spec
        .ifname
        .parse()
        .map_err(|_| format!("interface name {:?} contains a NUL byte", spec.ifname))?;
    let ring = QueueSize::new(RING_SIZE).map_err(|e| e.to_string())?;
    let attempt = |bind: BindFlags| {
        let cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            // tiergate loads its own XDP program (see `XdpProgram`).
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(bind | BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        // SAFETY: each (interface, queue) is opened once per process: the caller
        // gives every worker disjoint queues, and a failed attempt created no socket.
        unsafe { Socket::new(cfg, umem, &iface, spec.queue) }
    };
    let (result, mode) = if let Some(mode) = inherit {
        let flags = match mode {
            CopyMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
            CopyMode::Copy => BindFlags::XDP_COPY,
        };
        (attempt(flags), mode)
    } else if force_copy {
        (attempt(BindFlags::XDP_COPY), CopyMode::Copy)
    } else {
        match attempt(BindFlags::XDP_ZEROCOPY) {
            Ok(r) => (Ok(r), CopyMode::ZeroCopy),
            Err(_) => (attempt(BindFlags::XDP_COPY), CopyMode::Copy),
        }
    };
    let (tx, rx, rings) = result.map_err(|e| {
        let hint = if inherit == Some(CopyMode::ZeroCopy) {
            " (the sockets of a worker share one UMEM and so one mode: zero-copy, \
             chosen by the first interface; try --copy)"
        } else {
            ""
        };
        format!(
            "cannot open an AF_XDP socket on {} queue {}: {}{hint}",
            spec.ifname,
            spec.queue,
            chain(&e)
        )
    })?;
    let (fq, cq) = rings.ok_or_else(|| {
        format!(
            "{} queue {} is already bound by another socket of this UMEM",
            spec.ifname, spec.queue
        )
    })?;
    let fd = rx.fd().as_raw_fd();
    // Copy mode: let one `sendto` send the whole ring rather than 32 frames (newer
    // kernels; older ones refuse the option and keep 32).
    let tx_budget = if mode == CopyMode::Copy
        && setsockopt_int_at(
            fd,
            SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            i32::try_from(RING_SIZE).unwrap_or(i32::MAX),
        )
        .is_ok()
    {
        RING_SIZE
    } else {
        32
    };
    Ok(Socket1 {
        rx,
        tx,
        fq,
        cq,
        fd,
        mode,
        tx_budget,
    })
}

/// Kicks the kernel to send what the tx ring holds, when it asks for kicks
/// (need-wakeup). Zero-copy: one kick; the driver drains the ring on its own. Copy
/// mode (always needs kicks): the kernel sends at most `budget` frames per `sendto`
/// (32, TX_BATCH_SIZE, unless XDP_MAX_TX_SKB_BUDGET raised it), so one kick per
/// burst could leave frames on the ring, and frames that never complete never come
/// back to the fill rings; it kicks until the ring is drained, bounded by one kick
/// per `budget` descriptors on the ring, plus one.
#[inline(never)]
fn flush_tx(tx: &mut TxQueue, mode: CopyMode, budget: u32) {
    if !tx.needs_wakeup() {
        return;
    }
    if mode == CopyMode::ZeroCopy {
        let _ = tx.wakeup();
        return;
    }
    let pending = RING_SIZE - tx.nb_free_exact().min(RING_SIZE);
    for _ in 0..pending.div_ceil(budget.max(1)) + 1 {
        let _ = tx.wakeup();
        if tx.nb_free_exact() >= RING_SIZE {
            break;
        }
    }
}

/// `recvfrom(MSG_DONTWAIT)` with no buffer: tells the kernel to look at the fill
/// ring (need-wakeup) and, with busy polling enabled, runs the driver's NAPI here.
#[inline(never)]
fn kick_rx(fd: RawFd) {
    // SAFETY: a zero-length receive into no buffer with no address; the kernel only
    // reads the socket's rings. Errors (EAGAIN) are expected and ignored.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
}

fn setsockopt_int(fd: RawFd, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    setsockopt_int_at(fd, libc::SOL_SOCKET, opt, v)
}

fn setsockopt_int_at(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` outlives the call and its size is passed; `fd` is an open socket.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The index of interface `name`, if it exists (in this network namespace).
pub(super) fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Makes the calling thread SCHED_FIFO at `priority` (1-99). Fails with EPERM
/// without CAP_SYS_NICE (or an RLIMIT_RTPRIO that allows it).
pub(super) fn set_fifo(priority: i32) -> io::Result<()> {
    let p = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `p` is a valid sched_param that outlives the call; pid 0 is the calling
    // thread (Linux schedules threads one by one).
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const p) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises RLIMIT_MEMLOCK to unlimited (UMEM and BPF maps are locked memory). Returns
/// the limit in force afterwards (`None` = unlimited).
pub(super) fn raise_memlock() -> Result<Option<u64>, io::Error> {
    let inf = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `inf` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const inf) } == 0 {
        return Ok(None);
    }
    let err = io::Error::last_os_error();
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut cur) } != 0 {
        return Err(err);
    }
    // Without CAP_SYS_RESOURCE the soft limit can still go up to the hard one.
    let up = libc::rlimit {
        rlim_cur: cur.rlim_max,
        rlim_max: cur.rlim_max,
    };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const up) };
    if cur.rlim_max == libc::RLIM_INFINITY {
        Ok(None)
    } else {
        Ok(Some(cur.rlim_max))
    }
}

// ---- The XDP program -------------------------------------------------------------

/// One BPF instruction (struct bpf_insn; registers packed dst | src << 4, as on the
/// little-endian targets this builds for).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

#[cfg(target_endian = "big")]
compile_error!("the XDP program encoding assumes a little-endian target");

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// Opcodes (include/uapi/linux/bpf.h).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const LDX_H: u8 = 0x69; // BPF_LDX | BPF_MEM | BPF_H
const LD_DW_IMM: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW
const MOV64_K: u8 = 0xb7;
const MOV64_X: u8 = 0xbf;
const ADD64_K: u8 = 0x07;
const JGT_X: u8 = 0x2d;
const JEQ_K: u8 = 0x15;
const JA: u8 = 0x05;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const PSEUDO_MAP_FD: u8 = 1;
const FN_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;

/// The program: `bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)` (a queue
/// with no socket passes to the kernel); with `ip_only`, frames whose ethertype is not
/// IPv4 or IPv6 pass to the kernel first.
fn program(map_fd: RawFd, ip_only: bool) -> Vec<Insn> {
    let redirect = [
        insn(LDX_W, 2, 1, 16, 0),                     // r2 = ctx->rx_queue_index
        insn(LD_DW_IMM, 1, PSEUDO_MAP_FD, 0, map_fd), // r1 = &xsks
        insn(0, 0, 0, 0, 0),
        insn(MOV64_K, 3, 0, 0, XDP_PASS), // r3 = fallback action
        insn(CALL, 0, 0, 0, FN_REDIRECT_MAP),
        insn(EXIT, 0, 0, 0, 0),
    ];
    if !ip_only {
        return redirect.to_vec();
    }
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),      // 0: r2 = ctx->data
        insn(LDX_W, 3, 1, 4, 0),      // 1: r3 = ctx->data_end
        insn(MOV64_X, 4, 2, 0, 0),    // 2: r4 = r2
        insn(ADD64_K, 4, 0, 0, 14),   // 3: r4 += 14
        insn(JGT_X, 4, 3, 10, 0),     // 4: if r4 > data_end goto pass (15)
        insn(LDX_H, 4, 2, 12, 0),     // 5: r4 = ethertype (network order)
        insn(JEQ_K, 4, 0, 2, 0x0008), // 6: IPv4 -> redirect (9)
        insn(JEQ_K, 4, 0, 1, 0xdd86), // 7: IPv6 -> redirect (9)
        insn(JA, 0, 0, 6, 0),         // 8: goto pass (15)
    ];
    p.extend_from_slice(&redirect); // 9..=14
    p.push(insn(MOV64_K, 0, 0, 0, XDP_PASS)); // 15: pass
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (native XDP).
    Native,
    /// Generic (skb) XDP: any interface, slower.
    Generic,
}

/// tiergate's XDP program on one interface: its XSKMAP, the program and the BPF link
/// that attaches it. The link is an fd of this process: the program is detached when
/// this value drops *and* when the process dies in any way (SIGKILL included), so a
/// killed run leaves nothing attached.
#[derive(Debug)]
pub(super) struct XdpProgram {
    map: OwnedFd,
    prog: OwnedFd,
    link: Option<OwnedFd>,
    ifindex: u32,
}

fn owned(fd: libc::c_int, what: &str) -> Result<OwnedFd, String> {
    if fd < 0 {
        Err(format!("{what}: {}", io::Error::from_raw_os_error(-fd)))
    } else {
        // SAFETY: a non-negative return of libbpf's create calls is a new fd that
        // nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl XdpProgram {
    /// Creates the XSKMAP (`queues` entries) and loads the program for `ifindex`.
    pub(super) fn load(ifindex: u32, queues: u32, ip_only: bool) -> Result<Self, String> {
        let name = c"tiergate_xsks";
        // SAFETY: plain arguments and a NUL-terminated name; no options struct.
        let map = unsafe {
            libbpf_sys::bpf_map_create(
                libbpf_sys::BPF_MAP_TYPE_XSKMAP,
                name.as_ptr(),
                4,
                4,
                queues.max(1),
                std::ptr::null(),
            )
        };
        let map = owned(map, "cannot create the XSKMAP")?;
        let insns = program(map.as_raw_fd(), ip_only);
        let license = c"Apache-2.0";
        let pname = c"tiergate_xsk";
        // SAFETY: `insns` is a valid array of `insns.len()` bpf_insn-layout values
        // (repr(C), same size and field order) that outlives the call; the strings
        // are NUL-terminated; no options struct.
        let prog = unsafe {
            libbpf_sys::bpf_prog_load(
                libbpf_sys::BPF_PROG_TYPE_XDP,
                pname.as_ptr(),
                license.as_ptr(),
                insns.as_ptr().cast(),
                insns.len() as libbpf_sys::size_t,
                std::ptr::null_mut(),
            )
        };
        let prog = owned(prog, "cannot load the XDP program")?;
        Ok(XdpProgram {
            map,
            prog,
            link: None,
            ifindex,
        })
    }

    /// Steers frames of `queue` to socket `fd`.
    pub(super) fn register(&self, queue: u32, fd: RawFd) -> Result<(), String> {
        let value: u32 = u32::try_from(fd).map_err(|_| "bad socket fd".to_string())?;
        // SAFETY: key and value point at 4-byte values that outlive the call, the
        // sizes the map was created with.
        let r = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.map.as_raw_fd(),
                (&raw const queue).cast(),
                (&raw const value).cast(),
                0,
            )
        };
        if r < 0 {
            return Err(format!(
                "cannot register the socket of queue {queue}: {}",
                io::Error::from_raw_os_error(-r)
            ));
        }
        Ok(())
    }

    /// Attaches the program through a BPF link: native mode if the driver supports it,
    /// generic otherwise (or generic only, when `generic`).
    pub(super) fn attach(&mut self, generic: bool) -> Result<XdpMode, String> {
        const XDP_FLAGS_SKB_MODE: u32 = 2;
        const XDP_FLAGS_DRV_MODE: u32 = 4;
        let try_mode = |flags: u32| {
            let opts = libbpf_sys::bpf_link_create_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
                flags,
                ..Default::default()
            };
            // SAFETY: a valid options struct with its size set; fds owned by self.
            unsafe {
                libbpf_sys::bpf_link_create(
                    self.prog.as_raw_fd(),
                    self.ifindex as libc::c_int,
                    libbpf_sys::BPF_XDP,
                    &raw const opts,
                )
            }
        };
        let mut first_err = None;
        if !generic {
            let fd = try_mode(XDP_FLAGS_DRV_MODE);
            match owned(fd, "cannot attach the XDP program in native mode") {
                Ok(l) => {
                    self.link = Some(l);
                    return Ok(XdpMode::Native);
                }
                Err(e) => first_err = Some((fd, e)),
            }
        }
        let fd = try_mode(XDP_FLAGS_SKB_MODE);
        match owned(fd, "cannot attach the XDP program") {
            Ok(l) => {
                self.link = Some(l);
                Ok(XdpMode::Generic)
            }
            Err(e) => Err(match first_err {
                Some((f, _)) if f == -libc::EBUSY || fd == -libc::EBUSY => format!(
                    "{e} (another XDP program is attached to the interface; remove it with \
                     `ip link set dev IFACE xdp off`)"
                ),
                Some((_, e1)) => format!("{e1}; {e}"),
                None => e,
            }),
        }
    }
}

// ---- Flow offload ----------------------------------------------------------------

/// The flow-offload XDP program (`offload.bpf.c`), compiled by build.rs.
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);
static OFFLOAD_OBJ: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/offload.bpf.o")));

/// The key of one direction of a connection in `tg_flows` (`struct tg_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct OffloadKey {
    pub ifindex: u32,
    pub family: u8,
    pub proto: u8,
    pub zero: u16,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Network order, as on the wire.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
}

/// What `tg_flows` holds for one direction (`struct tg_val`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct OffloadValue {
    pub packets: u64,
    pub bytes: u64,
    /// bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the latest packet.
    pub last_ns: u64,
    pub generation: u32,
    /// Key of `tg_tx`: the interface slot to send on.
    pub egress: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub rewrite: u16,
    /// The worker that installed it (key of `tg_gen`).
    pub owner: u16,
}

const _: () = assert!(std::mem::size_of::<OffloadKey>() == 44);
const _: () = assert!(std::mem::size_of::<OffloadValue>() == 48);

/// The maps the offload programs of both interfaces share: the flows, the
/// configuration (router mode), each worker's policy generation and the devmap of
/// the two interfaces.
#[derive(Debug)]
pub(super) struct OffloadMaps {
    flows: OwnedFd,
    cfg: OwnedFd,
    gens: OwnedFd,
    tx: OwnedFd,
}

/// How [`OffloadMaps::insert`] treats an entry already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Insert {
    /// Replace it (BPF_ANY).
    Replace,
    /// Fail with EEXIST (BPF_NOEXIST).
    IfAbsent,
}

fn dup(fd: RawFd, what: &str) -> Result<OwnedFd, String> {
    if fd < 0 {
        return Err(format!("{what}: no fd"));
    }
    // SAFETY: F_DUPFD_CLOEXEC takes an int argument and returns a new fd or -1.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if n < 0 {
        return Err(format!("{what}: {}", io::Error::last_os_error()));
    }
    // SAFETY: `n` is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn map_update<K, V>(fd: RawFd, key: &K, value: &V, flags: u64) -> Result<(), io::Error> {
    // SAFETY: key and value point at values of the sizes the map was created with
    // (checked by the callers' types: the map layouts above) and outlive the call.
    let r = unsafe {
        libbpf_sys::bpf_map_update_elem(
            fd,
            (key as *const K).cast(),
            (value as *const V).cast(),
            flags,
        )
    };
    if r < 0 {
        Err(io::Error::from_raw_os_error(-r))
    } else {
        Ok(())
    }
}

impl OffloadMaps {
    /// Sets the router-mode flag.
    pub(super) fn set_cfg(&self, ip_only: bool) -> Result<(), String> {
        let v: [u32; 2] = [0, u32::from(ip_only)];
        map_update(self.cfg.as_raw_fd(), &0u32, &v, 0)
            .map_err(|e| format!("cannot configure the offload: {e}"))
    }

    /// Worker `worker` runs policy generation `generation` (its entries of other
    /// generations are stale).
    pub(super) fn set_generation(&self, worker: u16, generation: u32) -> Result<(), io::Error> {
        map_update(self.gens.as_raw_fd(), &u32::from(worker), &generation, 0)
    }

    /// Interface slot `slot` of the devmap sends on `ifindex`.
    pub(super) fn set_tx(&self, slot: u32, ifindex: u32) -> Result<(), String> {
        map_update(self.tx.as_raw_fd(), &slot, &ifindex, 0)
            .map_err(|e| format!("cannot fill the offload devmap: {e}"))
    }

    /// Installs one direction (replacing an entry there, or not: `how`).
    pub(super) fn insert(
        &self,
        key: &OffloadKey,
        value: &OffloadValue,
        how: Insert,
    ) -> Result<(), io::Error> {
        let flags = match how {
            Insert::Replace => libbpf_sys::BPF_ANY,
            Insert::IfAbsent => libbpf_sys::BPF_NOEXIST,
        };
        map_update(self.flows.as_raw_fd(), key, value, u64::from(flags))
    }

    /// The value of one direction, if installed.
    pub(super) fn lookup(&self, key: &OffloadKey) -> Option<OffloadValue> {
        let mut v = OffloadValue::default();
        // SAFETY: key and value buffers of the map's sizes, valid for the call.
        let r = unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                self.flows.as_raw_fd(),
                (key as *const OffloadKey).cast(),
                (&raw mut v).cast(),
            )
        };
        (r == 0).then_some(v)
    }

    /// Removes one direction; returns its last value.
    pub(super) fn take(&self, key: &OffloadKey) -> Option<OffloadValue> {
        let mut v = OffloadValue::default();
        // SAFETY: as in `lookup`.
        let r = unsafe {
            libbpf_sys::bpf_map_lookup_and_delete_elem(
                self.flows.as_raw_fd(),
                (key as *const OffloadKey).cast(),
                (&raw mut v).cast(),
            )
        };
        if r == 0 {
            return Some(v);
        }
        // Kernels without lookup-and-delete on hash maps: read, then delete.
        let v = self.lookup(key)?;
        // SAFETY: a key of the map's size, valid for the call.
        unsafe {
            libbpf_sys::bpf_map_delete_elem(
                self.flows.as_raw_fd(),
                (key as *const OffloadKey).cast(),
            )
        };
        Some(v)
    }

    /// Another handle on the same maps (each worker holds one).
    pub(super) fn try_clone(&self) -> Result<Self, String> {
        Ok(OffloadMaps {
            flows: dup(self.flows.as_raw_fd(), "offload map")?,
            cfg: dup(self.cfg.as_raw_fd(), "offload map")?,
            gens: dup(self.gens.as_raw_fd(), "offload map")?,
            tx: dup(self.tx.as_raw_fd(), "offload map")?,
        })
    }
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns().
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// A libbpf object, closed on drop.
struct BpfObject(*mut libbpf_sys::bpf_object);

impl Drop for BpfObject {
    fn drop(&mut self) {
        // SAFETY: a pointer bpf_object__open_mem returned, closed once.
        unsafe { libbpf_sys::bpf_object__close(self.0) };
    }
}

impl BpfObject {
    fn map(&self, name: &std::ffi::CStr) -> Result<*mut libbpf_sys::bpf_map, String> {
        // SAFETY: a live object and a NUL-terminated name.
        let m = unsafe { libbpf_sys::bpf_object__find_map_by_name(self.0, name.as_ptr()) };
        if m.is_null() {
            Err(format!("the offload program has no map {name:?}"))
        } else {
            Ok(m)
        }
    }

    fn map_fd(&self, name: &std::ffi::CStr) -> Result<OwnedFd, String> {
        let m = self.map(name)?;
        // SAFETY: a map of this live, loaded object.
        dup(unsafe { libbpf_sys::bpf_map__fd(m) }, "offload map")
    }
}

impl XdpProgram {
    /// Loads the flow-offload program for `ifindex` with an XSKMAP of `queues`
    /// entries: with `shared`, on the maps of the other interface's program;
    /// otherwise with new ones (`flows` entries in the flow map, a generation for
    /// each of `workers`). Returns the program and its shared maps.
    pub(super) fn load_offload(
        ifindex: u32,
        queues: u32,
        flows: u32,
        workers: u32,
        shared: Option<&OffloadMaps>,
    ) -> Result<(Self, OffloadMaps), String> {
        let obj = OFFLOAD_OBJ;
        let name = c"tiergate_offload";
        let opts = libbpf_sys::bpf_object_open_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_object_open_opts>() as _,
            object_name: name.as_ptr(),
            ..Default::default()
        };
        // SAFETY: the buffer is the embedded ELF object (8-byte aligned, 'static);
        // libbpf copies what it keeps; `opts` is valid with its size set.
        let raw = unsafe {
            libbpf_sys::bpf_object__open_mem(
                obj.0.as_ptr().cast(),
                obj.0.len() as libbpf_sys::size_t,
                &raw const opts,
            )
        };
        if raw.is_null() {
            return Err(format!(
                "cannot load the XDP program (offload object: {})",
                io::Error::last_os_error()
            ));
        }
        let o = BpfObject(raw);
        let set_max = |m: *mut libbpf_sys::bpf_map, n: u32| {
            // SAFETY: a map of the open, not yet loaded object.
            let r = unsafe { libbpf_sys::bpf_map__set_max_entries(m, n) };
            if r < 0 {
                Err(format!(
                    "cannot size an offload map: {}",
                    io::Error::from_raw_os_error(-r)
                ))
            } else {
                Ok(())
            }
        };
        set_max(o.map(c"tg_xsks")?, queues.max(1))?;
        set_max(o.map(c"tg_flows")?, flows.max(2))?;
        set_max(o.map(c"tg_gen")?, workers.max(1))?;
        if let Some(sh) = shared {
            for (n, fd) in [
                (c"tg_flows", &sh.flows),
                (c"tg_cfg", &sh.cfg),
                (c"tg_gen", &sh.gens),
                (c"tg_tx", &sh.tx),
            ] {
                let m = o.map(n)?;
                // SAFETY: a map of the open object and an fd of a map of the same
                // definition (the other interface's program); libbpf dups it.
                let r = unsafe { libbpf_sys::bpf_map__reuse_fd(m, fd.as_raw_fd()) };
                if r < 0 {
                    return Err(format!(
                        "cannot share the offload maps: {}",
                        io::Error::from_raw_os_error(-r)
                    ));
                }
            }
        }
        // SAFETY: a live, open object.
        let r = unsafe { libbpf_sys::bpf_object__load(o.0) };
        if r < 0 {
            return Err(format!(
                "cannot load the XDP program (offload): {}",
                io::Error::from_raw_os_error(-r)
            ));
        }
        // SAFETY: a live, loaded object and a NUL-terminated name.
        let p = unsafe {
            libbpf_sys::bpf_object__find_program_by_name(o.0, c"tiergate_offload".as_ptr())
        };
        if p.is_null() {
            return Err("the offload object has no program tiergate_offload".into());
        }
        // SAFETY: a program of the live, loaded object.
        let prog = dup(unsafe { libbpf_sys::bpf_program__fd(p) }, "offload program")?;
        let map = o.map_fd(c"tg_xsks")?;
        let maps = OffloadMaps {
            flows: o.map_fd(c"tg_flows")?,
            cfg: o.map_fd(c"tg_cfg")?,
            gens: o.map_fd(c"tg_gen")?,
            tx: o.map_fd(c"tg_tx")?,
        };
        Ok((
            XdpProgram {
                map,
                prog,
                link: None,
                ifindex,
            },
            maps,
        ))
    }
}

/// The id of the XDP program attached to `ifindex`, if any.
pub(super) fn attached_program(ifindex: u32) -> Option<u32> {
    let mut id: u32 = 0;
    // SAFETY: `id` is a valid, writable u32 for the call.
    let r = unsafe { libbpf_sys::bpf_xdp_query_id(ifindex as libc::c_int, 0, &raw mut id) };
    (r == 0 && id != 0).then_some(id)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A wake-up is readable (a sleeping `poll(2)` returns) once signalled, however
    /// often, until drained.
    #[test]
    fn a_wakeup_is_readable_once_signalled_until_drained() {
        let w = Wakeup::new().unwrap();
        let readable = |w: &Wakeup| {
            let mut p = libc::pollfd {
                fd: w.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid, initialised pollfd; timeout 0 returns at once.
            unsafe { libc::poll(&raw mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
        };
        assert!(!readable(&w));
        w.signal();
        w.signal();
        assert!(readable(&w));
        w.drain();
        assert!(!readable(&w));
        w.drain();
        assert!(!readable(&w));
    }

    #[test]
    fn instructions_have_the_kernel_layout() {
        assert_eq!(
            std::mem::size_of::<Insn>(),
            std::mem::size_of::<libbpf_sys::bpf_insn>()
        );
        let p = program(7, false);
        assert_eq!(p.len(), 6);
        assert_eq!(p[1].imm, 7);
        assert_eq!(p[1].regs, 1 | (PSEUDO_MAP_FD << 4));
    }

    /// Runs `f` on a thread of its own in a new, unnamed network namespace (gone,
    /// with its interfaces, when the thread ends). `false`: no namespace here
    /// (skipped, unless CI requires AF_XDP).
    pub(in crate::port::afxdp) fn in_new_netns(
        test: &str,
        f: impl FnOnce() + Send + 'static,
    ) -> bool {
        let test = test.to_string();
        std::thread::spawn(move || {
            // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this
            // thread (and the processes it starts) to a new network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let why = io::Error::last_os_error();
                assert!(
                    std::env::var("TIERGATE_REQUIRE_AFXDP").as_deref() != Ok("1"),
                    "{test}: cannot create a network namespace: {why}"
                );
                eprintln!("skipped {test}: cannot create a network namespace: {why}");
                return false;
            }
            // No IPv6 on the namespace's links: their router solicitations and
            // neighbour discovery would land on the tests' sockets at any moment
            // and unsettle exact frame counts. (This thread's /proc/sys/net is the
            // new namespace's; a kernel without IPv6 has no such file.)
            for conf in ["all", "default"] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
            }
            f();
            true
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    pub(in crate::port::afxdp) fn ip(args: &[&str]) {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }

    /// A veth pair `va`/`vb` with tiergate's program on `va` steering queue 0 to one
    /// socket, and a UDP socket on `vb`'s side that sends to an address behind `va`.
    fn veth_with_socket() -> (Frames, XdpProgram, std::net::UdpSocket) {
        // (sysfs shows the namespace it was mounted in: name the MAC, do not read it)
        let mac = "02:00:0a:09:00:02";
        ip(&[
            "link", "add", "va", "address", mac, "type", "veth", "peer", "name", "vb",
        ]);
        for d in ["va", "vb", "lo"] {
            ip(&["link", "set", d, "up"]);
        }
        ip(&["addr", "add", "10.9.0.1/24", "dev", "vb"]);
        ip(&[
            "neigh",
            "add",
            "10.9.0.2",
            "lladdr",
            mac,
            "dev",
            "vb",
            "nud",
            "permanent",
        ]);
        let spec = SocketSpec {
            ifname: "va".into(),
            queue: 0,
        };
        let frames = Frames::open(&[spec], 64, true).unwrap();
        let mut prog = XdpProgram::load(ifindex("va").unwrap(), 1, false).unwrap();
        prog.register(0, frames.fd(0).unwrap()).unwrap();
        prog.attach(false).unwrap();
        let udp = std::net::UdpSocket::bind("10.9.0.1:0").unwrap();
        (frames, prog, udp)
    }

    /// Receives until `want` frames are in the batch (or 2 s pass).
    fn receive_at_least(f: &mut Frames, want: usize) -> usize {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut got = 0;
        while got < want && std::time::Instant::now() < end {
            got += f.receive(0, 64 - got).1;
            if got < want {
                f.wait(10, None);
            }
        }
        got
    }

    #[test]
    fn a_repeated_handle_is_sent_once_and_no_frame_is_duplicated() {
        in_new_netns(
            "a_repeated_handle_is_sent_once_and_no_frame_is_duplicated",
            || {
                let (mut f, _prog, udp) = veth_with_socket();
                let total = (FRAMES_PER_SOCKET) as usize;
                assert_eq!(f.accounted(), total);
                for _ in 0..4 {
                    udp.send_to(b"tiergate", "10.9.0.2:9").unwrap();
                }
                let got = receive_at_least(&mut f, 4);
                assert!(got >= 4, "received {got} frames");
                assert_eq!(f.accounted(), total);
                // Frame 0 twice and frame 1: two frames go out, each once.
                assert_eq!(f.transmit(0, &[0, 0, 1]), 2);
                // Already handed over: nothing left to send.
                assert_eq!(f.transmit(0, &[0]), 0);
                assert!(f.data(0).is_empty());
                for i in 2..got {
                    f.release(i);
                }
                // Copy mode completes inside sendto; reap the completions.
                let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
                let mut reaped = 0;
                while reaped < 2 && std::time::Instant::now() < end {
                    reaped += f.reap(0);
                }
                assert_eq!(reaped, 2, "one completion per frame sent");
                assert_eq!(f.new_batch(), 0);
                assert_eq!(f.accounted(), total, "a frame was lost or duplicated");
            },
        );
    }

    #[test]
    fn ip_only_jumps_land_on_the_redirect_and_the_pass_blocks() {
        let p = program(3, true);
        assert_eq!(p.len(), 17);
        let target = |i: usize| (i as i64 + 1 + i64::from(p[i].off)) as usize;
        assert_eq!(target(4), 15);
        assert_eq!(target(6), 9);
        assert_eq!(target(7), 9);
        assert_eq!(target(8), 15);
        assert_eq!(p[9].code, LDX_W);
        assert_eq!(p[15].code, MOV64_K);
        assert_eq!(p[16].code, EXIT);
    }
}
