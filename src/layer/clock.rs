//! [`Clock`]: one runtime timer for the deadlines of every stream of a layer, and [`Timer`], a
//! stream's deadline on it.
//!
//! A tokio `Sleep` per stream costs over a hundred bytes and a timer-wheel entry for as long as
//! the stream is open, which is most of what an idle stream holds. Keep-alive deadlines fall on
//! a grid that every stream shares (see `coalesce` in `body`), so the deadlines of thousands of
//! idle streams are a handful of instants: the clock keeps, for each instant, the wakers
//! waiting for it, and one task sleeps until the earliest, wakes whoever waits for it, and ends
//! once nobody waits. A stream keeps its deadline and where its waker is; a stream that goes
//! (or moves its wake-up) takes its waker out at once, so the clock never keeps a finished
//! stream's task alive (except for the moment it waits in a batch being woken).
//!
//! A round of keep-alives can fall due for a hundred thousand streams at one instant. On a
//! current-thread runtime the task wakes them [`WAKE_BATCH`] at a time and lets the woken tasks
//! run in between: each task is still in the CPU's cache when it runs, just after its wake-up
//! touched it, and the run queue (which never gives back the room it grew to) holds a batch
//! rather than the whole round. A multi-thread runtime gets the whole round at once: its
//! workers share it out, and a yield between batches only made its connections write more
//! often.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use futures::future::{select, FutureExt};
use tokio::{
    sync::Notify,
    time::{sleep_until, Instant},
};

/// How many tasks the ticking task wakes before it yields to let them run, on a current-thread
/// runtime.
const WAKE_BATCH: usize = 128;

/// The deadlines of a layer's streams, woken by one task while any are waiting.
#[derive(Default)]
pub(crate) struct Clock {
    state: Mutex<ClockState>,
    /// Tells the ticking task that a deadline earlier than the one it sleeps until came in.
    earlier: Notify,
}

#[derive(Default)]
struct ClockState {
    /// The wakers waiting for each instant.
    waiting: BTreeMap<Instant, Waiters>,
    /// Counts registrations, which tells apart the successive sets of waiters of one instant.
    generations: u32,
    /// Whether a task is ticking (it stops once nothing waits).
    ticking: bool,
}

/// The wakers waiting for one instant. Slots keep their place until the instant passes (or
/// every slot is empty), so that a waker can be taken out by its index.
struct Waiters {
    generation: u32,
    slots: Vec<Option<Waker>>,
    live: usize,
}

/// Where a timer's waker waits in the clock.
#[derive(Debug, Clone, Copy)]
struct Registration {
    at: Instant,
    generation: u32,
    slot: u32,
}

impl Clock {
    /// Takes out the waker registered at `old`, if there is one, and registers `waker` for
    /// `at`, starting the ticking task if none is running.
    fn register(
        self: &Arc<Self>,
        old: Option<Registration>,
        at: Instant,
        waker: Waker,
    ) -> Registration {
        let mut state = self.lock();
        if let Some(old) = old {
            state.cancel(old);
        }
        let earliest = state.waiting.first_key_value().map(|(&first, _)| first);
        // Numbers each registration; a new set of waiters takes the number of its first.
        let generation = state.generations;
        state.generations = generation.wrapping_add(1);
        let waiters = state.waiting.entry(at).or_insert_with(|| Waiters {
            generation,
            slots: Vec::new(),
            live: 0,
        });
        let registration = Registration {
            at,
            generation: waiters.generation,
            slot: u32::try_from(waiters.slots.len()).unwrap_or(u32::MAX),
        };
        waiters.slots.push(Some(waker));
        waiters.live += 1;
        if !state.ticking {
            state.ticking = true;
            drop(state);
            tokio::spawn(tick(Ticking {
                clock: Arc::clone(self),
                ended: false,
            }));
        } else if earliest.is_none_or(|first| at < first) {
            drop(state);
            self.earlier.notify_one();
        }
        registration
    }

    /// Takes out the waker registered at `registration`, if it still waits.
    fn cancel(&self, registration: Registration) {
        self.lock().cancel(registration);
    }

    /// Takes out everything due by now; returns it with the next instant anything waits for,
    /// or `None` (and stops ticking) when nothing does.
    fn take_due(&self) -> (Vec<Waiters>, Option<Instant>) {
        let now = Instant::now();
        let mut state = self.lock();
        let mut due = Vec::new();
        while let Some(entry) = state.waiting.first_entry() {
            if *entry.key() > now {
                break;
            }
            due.push(entry.remove());
        }
        let next = state.waiting.first_key_value().map(|(&first, _)| first);
        state.ticking = next.is_some();
        (due, next)
    }

    fn lock(&self) -> MutexGuard<'_, ClockState> {
        // Every update leaves the state consistent, even one a panic interrupted.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ClockState {
    fn cancel(&mut self, registration: Registration) {
        let Some(waiters) = self.waiting.get_mut(&registration.at) else {
            return;
        };
        if waiters.generation != registration.generation {
            return;
        }
        let slot = usize::try_from(registration.slot).ok();
        if let Some(waker) = slot.and_then(|slot| waiters.slots.get_mut(slot)) {
            if waker.take().is_some() {
                waiters.live -= 1;
            }
        }
        if waiters.live == 0 {
            self.waiting.remove(&registration.at);
        }
    }
}

/// The ticking task: sleeps until the earliest instant anything waits for, wakes what is due
/// a batch at a time, and ends once nothing waits.
async fn tick(mut ticking: Ticking) {
    loop {
        let (due, next) = ticking.clock.take_due();
        // With nothing left to wait for, the clock already counts this task as gone.
        ticking.ended = next.is_none();
        let batch = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => WAKE_BATCH,
            _ => usize::MAX,
        };
        let wakers = due.into_iter().flat_map(|waiters| waiters.slots).flatten();
        for (woken, waker) in wakers.enumerate() {
            if woken > 0 && woken % batch == 0 {
                tokio::task::yield_now().await;
            }
            waker.wake();
        }
        let Some(next) = next else {
            return;
        };
        let sleep = std::pin::pin!(sleep_until(next));
        let earlier = std::pin::pin!(ticking.clock.earlier.notified());
        select(sleep, earlier.map(drop)).await;
    }
}

/// What the ticking task owns. If the runtime drops the task (it shuts down), polled or not,
/// the clock learns it is no longer ticking, and the next deadline starts a task again.
struct Ticking {
    clock: Arc<Clock>,
    /// Set when the task ended by itself, having marked the clock already.
    ended: bool,
}

impl Drop for Ticking {
    fn drop(&mut self) {
        if !self.ended {
            self.clock.lock().ticking = false;
        }
    }
}

/// One stream's deadline on its layer's [`Clock`]: polled like a tokio `Sleep`, except that
/// the caller keeps the waker it registered with, calls [`forget`](Timer::forget) when the
/// task's waker changes, and before dropping the timer (it does not hold the clock, which
/// saves every stream a word: the body it belongs to does).
pub(crate) struct Timer {
    at: Instant,
    /// Where the clock keeps the waker of the last poll that waited, and for which instant.
    registered: Option<Registration>,
}

impl Timer {
    /// A timer that fires at `at`.
    pub(crate) fn new(at: Instant) -> Self {
        Timer {
            at,
            registered: None,
        }
    }

    /// When it fires.
    pub(crate) fn deadline(&self) -> Instant {
        self.at
    }

    /// Moves the deadline.
    pub(crate) fn reset(&mut self, at: Instant) {
        self.at = at;
    }

    /// Ready once the deadline has passed; until then, makes sure the clock wakes the task by
    /// the deadline. A wake-up registered for an earlier instant (the deadline moved later
    /// since) is kept: it comes first, and the poll it causes registers again.
    pub(crate) fn poll(&mut self, clock: &Arc<Clock>, cx: &Context<'_>) -> Poll<()> {
        let now = Instant::now();
        if now >= self.at {
            return Poll::Ready(());
        }
        let still_waiting = self
            .registered
            .is_some_and(|registered| registered.at > now && registered.at <= self.at);
        if !still_waiting {
            let old = self.registered.take();
            self.registered = Some(clock.register(old, self.at, cx.waker().clone()));
        }
        Poll::Pending
    }

    /// Takes the registered waker out of the clock: the task no longer uses it, or the timer
    /// is about to go.
    pub(crate) fn forget(&mut self, clock: &Clock) {
        if let Some(registered) = self.registered.take() {
            clock.cancel(registered);
        }
    }
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("at", &self.at)
            .field(
                "registered",
                &self.registered.map(|registered| registered.at),
            )
            .finish()
    }
}
