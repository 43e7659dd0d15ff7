//! [`Clock`]: one runtime timer for the deadlines of every stream of a layer, and [`Timer`], a
//! stream's deadline on it.
//!
//! A tokio `Sleep` per stream costs over a hundred bytes and a timer-wheel entry for as long as
//! the stream is open, which is most of what an idle stream holds. Keep-alive deadlines fall on
//! a grid that every stream shares (see `coalesce` in `body`), so the deadlines of thousands of
//! idle streams are a handful of instants: the clock keeps the wakers waiting for each instant
//! and one task sleeps until the earliest, wakes whoever waits for it, and ends once nobody
//! waits. A stream keeps only its deadline and the instant it registered for.

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
    waiting: BTreeMap<Instant, Vec<Waker>>,
    /// Whether a task is ticking (it stops once nothing waits).
    ticking: bool,
}

impl Clock {
    /// Wakes `waker` at `at` (or as soon after as the runtime's timer allows).
    fn wake_at(self: &Arc<Self>, at: Instant, waker: Waker) {
        let mut state = self.lock();
        let earliest = state.waiting.first_key_value().map(|(&first, _)| first);
        state.waiting.entry(at).or_default().push(waker);
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
    }

    /// Wakes everything due by now; returns the next instant anything waits for, or `None`
    /// (and stops ticking) when nothing does.
    fn wake_due(&self) -> Option<Instant> {
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
        drop(state);
        due.into_iter().flatten().for_each(Waker::wake);
        next
    }

    fn lock(&self) -> MutexGuard<'_, ClockState> {
        // Every update leaves the state consistent, even one a panic interrupted.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The ticking task: sleeps until the earliest instant anything waits for, wakes what is due,
/// and ends once nothing waits.
async fn tick(mut ticking: Ticking) {
    while let Some(next) = ticking.clock.wake_due() {
        let sleep = std::pin::pin!(sleep_until(next));
        let earlier = std::pin::pin!(ticking.clock.earlier.notified());
        select(sleep, earlier.map(drop)).await;
    }
    ticking.ended = true;
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
/// the caller keeps the waker it registered with, and calls [`forget`](Timer::forget) when the
/// task's waker changes.
#[derive(Debug)]
pub(crate) struct Timer {
    at: Instant,
    /// The instant the clock will wake this timer's task at, with the waker of the last poll.
    registered: Option<Instant>,
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
            .is_some_and(|when| when > now && when <= self.at);
        if !still_waiting {
            clock.wake_at(self.at, cx.waker().clone());
            self.registered = Some(self.at);
        }
        Poll::Pending
    }

    /// Forgets the wake-up registered: it would wake a waker the task no longer uses.
    pub(crate) fn forget(&mut self) {
        self.registered = None;
    }
}
