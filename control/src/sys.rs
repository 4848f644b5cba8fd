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

/// The calling thread's scheduling priority raised (or lowered) to a nice value for as
/// long as the guard lives; dropping it puts back the value the thread had. Linux
/// keeps a nice value per thread, so other threads of the process are not affected.
///
/// A thread started while a guard is held inherits the raised value; background work
/// started from a change (compaction, the reaper) takes [`base_nice`] before it spawns
/// and calls [`settle_nice`] first thing on the new thread.
#[derive(Debug)]
pub struct Nice {
    tid: libc::pid_t,
    previous: i32,
    outer: Option<i32>,
}

std::thread_local! {
    /// The value the thread had before its outermost live [`Nice`] guard.
    static BASE_NICE: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
}

/// The nice value the calling thread had before the [`Nice`] guard it holds (`None`:
/// it holds none, its value is its own).
pub fn base_nice() -> Option<i32> {
    BASE_NICE.with(std::cell::Cell::get)
}

/// Puts the calling thread, just started by a thread whose [`base_nice`] was `base`,
/// back at that value: background work does not keep a change's priority. Raising a
/// nice value needs no privilege; a failure leaves the inherited value.
pub fn settle_nice(base: Option<i32>) {
    if let Some(b) = base {
        let _ = set_thread_nice(thread_id(), b);
    }
}

/// The calling thread's id (`gettid`), for [`set_thread_nice`] from another thread.
pub fn thread_id() -> i32 {
    // SAFETY: `gettid` takes no argument and cannot fail.
    unsafe { libc::gettid() }
}

/// The calling thread's nice value (`None` if it cannot be read).
pub fn own_nice() -> Option<i32> {
    thread_nice(thread_id()).ok()
}

/// The nice value of thread `tid` of this process.
pub fn thread_nice(tid: i32) -> std::io::Result<i32> {
    let who = thread_who(tid)?;
    // SAFETY: `getpriority` reads the scheduling state of thread `tid` and touches no
    // memory of ours; -1 is a valid nice value, so errno is cleared first and read
    // after to tell a failure from it.
    unsafe {
        *libc::__errno_location() = 0;
        let p = libc::getpriority(libc::PRIO_PROCESS, who);
        if p == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(p)
    }
}

/// Sets the nice value of thread `tid` of this process (lowering it below the
/// thread's current value needs CAP_SYS_NICE).
pub fn set_thread_nice(tid: i32, value: i32) -> std::io::Result<()> {
    set_priority(thread_who(tid)?, value)
}

/// A thread id as `getpriority`/`setpriority` take it (0 would mean the caller).
fn thread_who(tid: i32) -> std::io::Result<libc::id_t> {
    libc::id_t::try_from(tid)
        .ok()
        .filter(|&w| w != 0)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

impl Nice {
    /// Sets the calling thread's nice value to `value` (-20..=19; lower runs first).
    /// Lowering it below the current value needs CAP_SYS_NICE (or RLIMIT_NICE);
    /// without it the error is EACCES/EPERM and nothing changes.
    pub fn set(value: i32) -> std::io::Result<Nice> {
        let tid = thread_id();
        let previous = thread_nice(tid)?;
        set_thread_nice(tid, value)?;
        let outer = BASE_NICE.with(|b| b.replace(Some(b.get().unwrap_or(previous))));
        Ok(Nice {
            tid,
            previous,
            outer,
        })
    }
}

impl Drop for Nice {
    fn drop(&mut self) {
        // Back from a raised priority is a higher nice value, which is always
        // allowed. Back down after a guard that lowered the priority needs
        // CAP_SYS_NICE; refused, the thread keeps the guard's value.
        let _ = set_thread_nice(self.tid, self.previous);
        BASE_NICE.with(|b| b.set(self.outer));
    }
}

fn set_priority(who: libc::id_t, value: i32) -> std::io::Result<()> {
    // SAFETY: `setpriority` on PRIO_PROCESS with a thread id changes only that
    // thread's nice value; it takes plain integers and touches no memory of ours.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, who, value) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of(tid: libc::pid_t) -> i32 {
        thread_nice(tid).unwrap()
    }

    #[test]
    fn a_nice_guard_sets_the_thread_alone_and_puts_it_back() {
        // On threads of their own, so that the test harness's threads keep theirs.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            tx.send(thread_id()).unwrap();
            let _ = done_rx.recv();
        });
        let other_tid = rx.recv().unwrap();
        std::thread::spawn(move || {
            let me = thread_id();
            let before = nice_of(me);
            let other_before = nice_of(other_tid);
            // Raising the value never needs a privilege.
            let target = (before + 3).min(19);
            assert_eq!(base_nice(), None);
            {
                let _g = Nice::set(target).expect("raising the nice value is always allowed");
                assert_eq!(nice_of(me), target);
                assert_eq!(
                    nice_of(other_tid),
                    other_before,
                    "another thread is not affected"
                );
                assert_eq!(base_nice(), Some(before));
                // A thread started now inherits `target`; settled, it is back at `before`
                // (lowering again, so only as root).
                let base = base_nice();
                let (inherited, settled) = std::thread::spawn(move || {
                    let me = thread_id();
                    let inherited = nice_of(me);
                    settle_nice(base);
                    (inherited, nice_of(me))
                })
                .join()
                .unwrap();
                assert_eq!(inherited, target);
                if euid() == 0 {
                    assert_eq!(settled, before);
                }
            }
            assert_eq!(base_nice(), None);
            // The drop lowers the value back, which only a privileged thread may do.
            if euid() == 0 {
                assert_eq!(nice_of(me), before);
            }
        })
        .join()
        .unwrap();
        // Another thread's value, set from here: raising it needs no privilege.
        let before = nice_of(other_tid);
        let raised = (before + 2).min(19);
        set_thread_nice(other_tid, raised).unwrap();
        assert_eq!(nice_of(other_tid), raised);
        assert_eq!(own_nice(), Some(nice_of(thread_id())));
        done_tx.send(()).unwrap();
        other.join().unwrap();
    }
}
