//! [`Subscriber`]: one reader of a topic's log, with its own cursor.

use std::{
    convert::Infallible,
    fmt,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll, Waker},
};

use futures::Stream;

use super::{
    broker::{BoxFuture, Gap, Page},
    LagPolicy, Shared, State,
};
use crate::{
    replay::{Entry, IdScheme, Resume},
    Event, LastEventId,
};

/// One subscriber of a [`Topic`](super::Topic): a stream of its events, in order, ready to be
/// the stream of an [`SseBody`](crate::SseBody).
///
/// It ends when the topic is gone (see [`Topic`](super::Topic)) and every event was read, or
/// after the final notice of [`LagPolicy::Disconnect`]. Idle, it costs about a hundred bytes,
/// its slot in the topic included; the events it has not read yet live once, in the topic's
/// log, for all subscribers.
///
/// ```
/// use tower_sse::{test::collect_events, Hub, SseBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::BoxError> {
/// let hub = Hub::new();
/// let news = hub.topic("news");
/// let subscriber = news.subscribe();
/// news.publish("one").await?;
/// drop(news);
/// hub.remove("news"); // the topic's last handle: its subscribers end after what they hold
/// let events = collect_events(SseBody::new(subscriber)).await?;
/// assert_eq!(events[0].data, "one");
/// # Ok(())
/// # }
/// ```
pub struct Subscriber {
    shared: Arc<Shared>,
    /// The position of the next event to take from the log.
    next: u64,
    /// Events taken from the log but not yielded yet, the next one last: a subscriber that is
    /// behind takes several per lock of the topic.
    ready: Vec<Event>,
    /// Where its waker is kept in the topic's waiters.
    slot: usize,
    /// Set while it waits at the end of the log with this waker registered.
    parked: Option<Parked>,
    /// Set while it resumes with a broker, which is rare: boxed, so that the many
    /// subscribers that never do stay small.
    resuming: Option<Box<Resuming>>,
    done: bool,
}

/// Where a subscriber stands while it resumes with a broker.
struct Resuming {
    /// Events whose key is not after this one are not for it (it resumed after an id this
    /// node's log had not reached yet).
    skip_through: Option<u128>,
    /// Set while it reads what it missed from the broker, before joining the log.
    catch_up: Option<CatchUp>,
}

impl Resuming {
    /// Skips the log's events up to `key` (if any).
    fn skipping(skip_through: Option<u128>) -> Option<Box<Resuming>> {
        skip_through.map(|key| {
            Box::new(Resuming {
                skip_through: Some(key),
                catch_up: None,
            })
        })
    }
}

/// A subscriber's reads from the broker, strictly after `key` of `epoch`.
struct CatchUp {
    epoch: Box<str>,
    key: u128,
    /// Whether the next page must prove that the event with `key` is still held.
    including: bool,
    fetch: Option<BoxFuture<Page>>,
}

/// A subscriber's record of its registration: the round it was made in, and the waker.
struct Parked {
    round: u64,
    waker: Waker,
}

impl Parked {
    /// Registers `waker` in `slot` for the next event of a subscriber that has read everything
    /// so far; `state` is the topic's, locked. Reuses the earlier record's waker when it is the
    /// same.
    fn register(
        shared: &Shared,
        state: &mut State,
        slot: usize,
        earlier: Option<Parked>,
        waker: &Waker,
    ) -> Parked {
        state.waiters.register(slot, waker);
        // Rounds only change under the lock, which is held: this is the current one.
        let round = shared.rounds.load(Ordering::Relaxed);
        let waker = match earlier {
            Some(earlier) if earlier.waker.will_wake(waker) => earlier.waker,
            _ => waker.clone(),
        };
        Parked { round, waker }
    }
}

impl Subscriber {
    /// How many events a subscriber takes from the log at once, at most: fewer locks of the
    /// shared topic when it is behind, at most this many events held ahead of sending them.
    pub const READ_AHEAD: usize = 32;

    /// Registers a subscriber that reads from `resume` on; `state` is the topic's, locked.
    pub(super) fn new(shared: &Arc<Shared>, state: &mut State, resume: Resume) -> Subscriber {
        state.subscribers += 1;
        let (next, skip_through) = match resume {
            Resume::At {
                position,
                skip_through,
            } => (position, skip_through),
            // Joins the log once the broker has given what the log does not hold.
            Resume::Fetch { .. } => (state.log.next_position(), None),
        };
        Subscriber {
            shared: Arc::clone(shared),
            next,
            ready: Vec::new(),
            slot: state.waiters.insert(),
            parked: None,
            resuming: Resuming::skipping(skip_through),
            done: false,
        }
    }

    /// Reads from the broker what came after `last`, before joining the log.
    pub(super) fn fetch_from(&mut self, last: &LastEventId) {
        if let Some((epoch, key)) = IdScheme::Stream.parse(last.as_str()) {
            self.resuming = Some(Box::new(Resuming {
                skip_through: None,
                catch_up: Some(CatchUp {
                    epoch: epoch.into(),
                    key,
                    including: true,
                    fetch: None,
                }),
            }));
        }
    }

    /// Yields `event` before anything else.
    pub(super) fn announce(&mut self, event: Event) {
        self.ready.push(event);
    }

    /// The name of the topic it reads.
    pub fn topic(&self) -> &str {
        &self.shared.name
    }

    /// Drives the read from the broker: `Ready` once it has events to yield or has joined the
    /// log.
    fn poll_catch_up(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let catch_up = self.resuming.as_mut().and_then(|r| r.catch_up.as_mut());
        let (Some(catch_up), Some(broker)) = (catch_up, &self.shared.broker) else {
            self.resuming = None;
            return Poll::Ready(());
        };
        let fetch = catch_up.fetch.get_or_insert_with(|| {
            broker.fetch(
                &self.shared.name,
                &catch_up.epoch,
                catch_up.key,
                catch_up.including,
            )
        });
        let page = match fetch.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(page)) => page,
            Poll::Ready(Err(Gap)) => {
                // Trimmed away, or another epoch: announce it and go live.
                self.resuming = None;
                self.next = self.shared.lock().log.next_position();
                self.ready.push(self.shared.notices.resync(0));
                return Poll::Ready(());
            }
        };
        catch_up.fetch = None;
        catch_up.including = false;
        let empty = page.is_empty();
        if let Some(&(key, _)) = page.last() {
            catch_up.key = key;
        }
        self.ready = page.into_iter().rev().map(|(_, event)| event).collect();
        let state = self.shared.lock();
        let joined = if *state.log.epoch() == *catch_up.epoch {
            state.log.position_after(catch_up.key)
        } else {
            None
        };
        match joined {
            Some(Resume::At {
                position,
                skip_through,
            }) => {
                self.next = position;
                self.resuming = Resuming::skipping(skip_through);
            }
            _ if empty => {
                // The broker has nothing newer, and this node's log has not started its
                // epoch yet: wait for the log to pass the key.
                self.next = state.log.next_position();
                self.resuming = Resuming::skipping(Some(catch_up.key));
            }
            _ => {}
        }
        Poll::Ready(())
    }
}

impl Stream for Subscriber {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.ready.pop() {
                return Poll::Ready(Some(Ok(event)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if this.resuming.as_ref().is_some_and(|r| r.catch_up.is_some()) {
                match this.poll_catch_up(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => continue,
                }
            }
            // Nothing was published since it parked with this very waker: no need to lock.
            if let Some(parked) = &this.parked {
                if parked.round == this.shared.rounds.load(Ordering::Acquire)
                    && parked.waker.will_wake(cx.waker())
                {
                    return Poll::Pending;
                }
            }
            let parked = this.parked.take();
            let mut state = this.shared.lock();
            let missed = match state.log.read(this.next, Subscriber::READ_AHEAD - 1) {
                Entry::Retained(first, after) => {
                    this.next += 1 + after.len() as u64;
                    let event = match this.resuming.as_ref().and_then(|r| r.skip_through) {
                        None => {
                            this.ready
                                .extend(after.rev().map(|logged| logged.event.clone()));
                            Some(first.event.clone())
                        }
                        Some(skip) => {
                            let mut events: Vec<Event> = std::iter::once(first)
                                .chain(after)
                                .filter(|logged| logged.key > skip)
                                .map(|logged| logged.event.clone())
                                .collect();
                            if !events.is_empty() {
                                this.resuming = None;
                            }
                            events.reverse();
                            this.ready = events;
                            this.ready.pop()
                        }
                    };
                    if this.next == state.log.next_position() && state.publishers > 0 {
                        // At the end of a live log: register now, so that the poll that follows
                        // this event finds out it has to wait without taking the lock.
                        let registered = Parked::register(
                            &this.shared,
                            &mut state,
                            this.slot,
                            parked,
                            cx.waker(),
                        );
                        this.parked = Some(registered);
                    }
                    drop(state);
                    match event {
                        Some(event) => return Poll::Ready(Some(Ok(event))),
                        None => continue,
                    }
                }
                Entry::Evicted { first_retained } => {
                    let missed = first_retained - this.next;
                    this.next = first_retained;
                    missed
                }
                Entry::Future if state.publishers == 0 => {
                    drop(state);
                    this.done = true;
                    return Poll::Ready(None);
                }
                Entry::Future => {
                    let registered =
                        Parked::register(&this.shared, &mut state, this.slot, parked, cx.waker());
                    this.parked = Some(registered);
                    drop(state);
                    // Idle: give back the read-ahead buffer instead of holding it while nothing
                    // flows.
                    this.ready = Vec::new();
                    return Poll::Pending;
                }
            };
            drop(state);
            if this.shared.lag_policy == LagPolicy::Disconnect {
                this.done = true;
            }
            let notice = this.shared.notices.lag(this.shared.lag_policy, missed);
            return Poll::Ready(Some(Ok(notice)));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.waiters.remove(self.slot);
        state.subscribers -= 1;
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.shared.name)
            .field("next", &self.next)
            .field("resuming", &self.resuming.is_some())
            .field("done", &self.done)
            .finish()
    }
}
