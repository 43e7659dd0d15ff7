//! The wakers of a topic's subscribers that wait at the end of its log.

use std::task::Waker;

/// The wakers of a topic's subscribers that wait for the next event.
///
/// Each subscriber owns a slot; the slots with a waker are listed in `waiting`, and each such
/// slot remembers its place there, so registering, unregistering and taking them all are
/// O(1) per subscriber and memory never outgrows the peak number of subscribers.
#[derive(Default)]
pub(super) struct Waiters {
    slots: Vec<Slot>,
    free: Vec<usize>,
    waiting: Vec<usize>,
}

#[derive(Default)]
struct Slot {
    waker: Option<Waker>,
    /// The slot's index in `waiting` while it holds a waker.
    at: usize,
}

impl Waiters {
    /// A slot for a new subscriber.
    pub(super) fn insert(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        })
    }

    /// Frees the slot of a subscriber that is gone.
    pub(super) fn remove(&mut self, slot: usize) {
        if self.slots[slot].waker.take().is_some() {
            let at = self.slots[slot].at;
            self.waiting.swap_remove(at);
            if let Some(&moved) = self.waiting.get(at) {
                self.slots[moved].at = at;
            }
        }
        self.free.push(slot);
    }

    /// Keeps the waker to wake the slot's subscriber at the next event.
    pub(super) fn register(&mut self, slot: usize, waker: &Waker) {
        let entry = &mut self.slots[slot];
        match &mut entry.waker {
            Some(kept) => {
                if !kept.will_wake(waker) {
                    *kept = waker.clone();
                }
            }
            None => {
                entry.waker = Some(waker.clone());
                entry.at = self.waiting.len();
                self.waiting.push(slot);
            }
        }
    }

    /// Takes every waiting waker, to be woken once the topic's lock is released.
    pub(super) fn take_all(&mut self) -> Vec<Waker> {
        let slots = &mut self.slots;
        self.waiting
            .drain(..)
            .filter_map(|slot| slots[slot].waker.take())
            .collect()
    }
}
