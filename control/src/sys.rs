//! The control crate's only contact with the OS beyond std: the one module that may
//! use `unsafe`.
#![allow(unsafe_code)]

/// Restores the default action of SIGPIPE (terminate quietly), which the Rust runtime
/// sets to "ignore". Without it, `tiergate ... | head` makes every later write to
/// stdout fail with EPIPE (which `control::cli::out` would turn into exit 2); with it,
/// the command ends the way Unix filters do when their reader goes away.
pub fn restore_default_sigpipe() {
    // SAFETY: `signal` with `SIG_DFL` installs no handler code; it only resets the
    // disposition of SIGPIPE for this process, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Memory the kernel says is available for new allocations without swapping
/// (`MemAvailable` of `/proc/meminfo`), in bytes; `None` where that is not known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Ignores SIGPIPE: a daemon serving a socket must see a client that went away as a
/// failed write (EPIPE), not die of it.
pub fn ignore_sigpipe() {
    // SAFETY: `signal` with `SIG_IGN` installs no handler code; it only sets the
    // disposition of SIGPIPE for this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// The process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: `geteuid` takes no argument, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// CPU time the calling thread has consumed so far (zero if the clock cannot be read):
/// a change's own cost, apart from the time a shared machine gave to other work.
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is supported
    // on Linux, and on failure `ts` stays zero.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    std::time::Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Hands the calling thread's free memory back to the OS: a parse thread calls it
/// after each file, so that the large values it built and freed are not kept for the
/// rest of the load (the `tiergate` binary allocates with mimalloc, which otherwise
/// keeps freed pages for a while: `check` of 100 000 policies as JSON lists peaked at
/// 161–203 MB without it, 140–144 MB with it; under another allocator this only
/// tidies mimalloc's own, unused heap).
pub fn release_free_memory() {
    // SAFETY: `mi_collect` takes a plain flag, touches only the allocator's own state
    // for the calling thread, and may be called at any time from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
