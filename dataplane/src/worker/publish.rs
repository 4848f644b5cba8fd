//! Publishing policy generations to workers: a [`Published`] classifier in a
//! [`ClassifierSlot`] (arc-swap), polled by every worker at its batch boundary, and
//! the reclamation of retired generations on the publisher's thread.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use crossbeam::utils::CachePadded;

/// What a worker tells the publisher: the generation it runs, and whether it is
/// asleep waiting for frames.
///
/// A worker that sleeps (an idle AF_XDP worker in `poll(2)`, up to 10 ms) takes the
/// newest generation before it processes anything when it wakes, so the publisher
/// may count it as running every generation published while it sleeps
/// ([`ClassifierSlot::taken_by`]). The order that makes this exact: the worker
/// clears `asleep` and then loads the published generation; the publisher stores
/// the generation and then loads `asleep`; all four sequentially consistent. If the
/// publisher reads `asleep` set, the worker's clear comes later, so its load sees the
/// new generation.
#[derive(Debug)]
pub(super) struct Seat {
    pub(super) generation: AtomicU32,
    pub(super) asleep: AtomicBool,
}

/// A classifier with the generation number it was compiled for.
#[derive(Debug)]
pub struct Published<C> {
    /// Policy generation (control's store generation, truncated to 32 bits).
    pub generation: u32,
    /// The compiled classifier.
    pub classifier: C,
}

/// Where the current classifier is published for all workers (arc-swap). Workers
/// pick up a new one at their next batch boundary and report the generation they
/// run; [`ClassifierSlot::reclaim`] frees retired classifiers on the caller's thread
/// once no worker runs them.
#[derive(Debug)]
pub struct ClassifierSlot<C> {
    current: ArcSwap<Published<C>>,
    /// The generation of `current`, on a cache line of its own that only `publish`
    /// writes: workers poll it every batch with a plain load (no arc-swap guard, so
    /// nothing shared is written on the packet path).
    pub(super) published: CachePadded<AtomicU32>,
    retired: Mutex<Vec<Arc<Published<C>>>>,
    seats: Mutex<Vec<Arc<Seat>>>,
    /// Threads [`ClassifierSlot::publish`] unparks: workers that park while idle
    /// ([`ClassifierSlot::wake_on_publish`]) take a new generation at once instead of
    /// at the end of their nap.
    sleepers: Mutex<Vec<std::thread::Thread>>,
    /// Called by every [`ClassifierSlot::publish`]: workers that sleep in a system
    /// call rather than park ([`ClassifierSlot::wake_with`]).
    wakers: Mutex<Vec<Waker>>,
}

/// A function [`ClassifierSlot::publish`] calls to wake a sleeping worker.
#[derive(Clone)]
pub struct Waker(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

impl<C> ClassifierSlot<C> {
    /// A slot holding `initial`.
    pub fn new(initial: Published<C>) -> Self {
        ClassifierSlot {
            published: CachePadded::new(AtomicU32::new(initial.generation)),
            current: ArcSwap::from_pointee(initial),
            retired: Mutex::new(Vec::new()),
            seats: Mutex::new(Vec::new()),
            sleepers: Mutex::new(Vec::new()),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Has every later [`ClassifierSlot::publish`] unpark the calling thread (a
    /// worker that parks with a timeout while idle); once per thread. Entries are
    /// never removed: the list holds one per worker thread ever started on the slot.
    pub fn wake_on_publish(&self) {
        let me = std::thread::current();
        if let Ok(mut s) = self.sleepers.lock()
            && !s.iter().any(|t| t.id() == me.id())
        {
            s.push(me);
        }
    }

    /// Has every later [`ClassifierSlot::publish`] call `wake` (a worker that
    /// sleeps in `poll(2)` and must take a new generation at once: one with a flow
    /// offload, whose XDP program forwards under the worker's generation). Entries
    /// are never removed.
    pub fn wake_with(&self, wake: Waker) {
        if let Ok(mut w) = self.wakers.lock() {
            w.push(wake);
        }
    }

    /// Publishes a new generation; the previous one is retired (kept alive here until
    /// [`ClassifierSlot::reclaim`] sees no worker using it).
    pub fn publish(&self, next: Published<C>) {
        let generation = next.generation;
        let old = self.current.swap(Arc::new(next));
        // Sequentially consistent: see [`Seat`].
        self.published.store(generation, Ordering::SeqCst);
        if let Ok(mut r) = self.retired.lock() {
            r.push(old);
        }
        if let Ok(s) = self.sleepers.lock() {
            s.iter().for_each(std::thread::Thread::unpark);
        }
        if let Ok(w) = self.wakers.lock() {
            w.iter().for_each(|w| (w.0)());
        }
    }

    /// The generation currently published.
    pub fn generation(&self) -> u32 {
        self.current.load().generation
    }

    /// The currently published classifier.
    pub fn load(&self) -> Arc<Published<C>> {
        self.current.load_full()
    }

    /// Frees retired classifiers that no registered worker runs any more. Returns
    /// how many are still retained.
    pub fn reclaim(&self) -> usize {
        let in_use: Vec<u32> = match self.seats.lock() {
            Ok(s) => s
                .iter()
                .map(|a| a.generation.load(Ordering::Acquire))
                .collect(),
            Err(_) => return usize::MAX,
        };
        match self.retired.lock() {
            Ok(mut r) => {
                r.retain(|p| in_use.contains(&p.generation));
                r.len()
            }
            Err(_) => usize::MAX,
        }
    }

    /// The generation each registered worker runs now, in registration order (a
    /// worker that stopped keeps reporting its last one).
    pub fn running(&self) -> Vec<u32> {
        match self.seats.lock() {
            Ok(s) => s
                .iter()
                .map(|a| a.generation.load(Ordering::Acquire))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Per registered worker (in registration order), whether it has taken
    /// `generation`, given `newer_or_same(running, generation)`: it runs it (or a
    /// later one), or it sleeps and takes the newest generation before it processes
    /// anything when it wakes ([`Seat`]). Call after publishing `generation`.
    pub fn taken_by(&self, generation: u32, newer_or_same: impl Fn(u32, u32) -> bool) -> Vec<bool> {
        match self.seats.lock() {
            Ok(s) => s
                .iter()
                .map(|a| {
                    newer_or_same(a.generation.load(Ordering::Acquire), generation)
                        || a.asleep.load(Ordering::SeqCst)
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub(super) fn register(&self, generation: u32) -> Arc<Seat> {
        let seat = Arc::new(Seat {
            generation: AtomicU32::new(generation),
            asleep: AtomicBool::new(false),
        });
        if let Ok(mut s) = self.seats.lock() {
            s.push(Arc::clone(&seat));
        }
        seat
    }
}
