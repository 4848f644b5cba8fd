//! Publishing policy generations to workers: a [`Published`] classifier in a
//! [`ClassifierSlot`] (arc-swap), polled by every worker at its batch boundary, and
//! the reclamation of retired generations on the publisher's thread.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use crossbeam::utils::CachePadded;

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
    seats: Mutex<Vec<Arc<AtomicU32>>>,
    /// Threads [`ClassifierSlot::publish`] unparks: workers that park while idle
    /// ([`ClassifierSlot::wake_on_publish`]) take a new generation at once instead of
    /// at the end of their nap.
    sleepers: Mutex<Vec<std::thread::Thread>>,
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

    /// Publishes a new generation; the previous one is retired (kept alive here until
    /// [`ClassifierSlot::reclaim`] sees no worker using it).
    pub fn publish(&self, next: Published<C>) {
        let generation = next.generation;
        let old = self.current.swap(Arc::new(next));
        self.published.store(generation, Ordering::Release);
        if let Ok(mut r) = self.retired.lock() {
            r.push(old);
        }
        if let Ok(s) = self.sleepers.lock() {
            s.iter().for_each(std::thread::Thread::unpark);
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
            Ok(s) => s.iter().map(|a| a.load(Ordering::Acquire)).collect(),
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
            Ok(s) => s.iter().map(|a| a.load(Ordering::Acquire)).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub(super) fn register(&self, generation: u32) -> Arc<AtomicU32> {
        let seat = Arc::new(AtomicU32::new(generation));
        if let Ok(mut s) = self.seats.lock() {
            s.push(Arc::clone(&seat));
        }
        seat
    }
}
