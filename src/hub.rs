//! [`Hub`]: broadcast events to many subscribers, each event encoded once.
//!
//! A hub holds named [`Topic`]s. Publishing to a topic numbers the event, encodes it once and
//! appends it to the topic's [`ReplayLog`]; every [`Subscriber`] reads the log through its own
//! cursor, so fanning out costs a reference-count bump per subscriber, never a copy or a second
//! encoding. The log is each subscriber's bounded queue: the publisher never waits for anyone,
//! and a subscriber that falls further behind than the log reaches is handled by the hub's
//! [`LagPolicy`], never by losing events silently.

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    task::{Context, Poll, Waker},
};

use futures::Stream;

use crate::{replay::Entry, Event, LastEventId, ReplayError, ReplayLog};

/// How many more events a subscriber that is behind takes from the log at once, beyond the
/// next one: fewer locks of the shared topic, at most this many clones held ahead.
const READ_AHEAD: usize = 31;

/// How many events a topic keeps unless [`HubBuilder::max_events`] says otherwise.
const DEFAULT_MAX_EVENTS: usize = 1024;

/// How many bytes of encoded events a topic keeps unless [`HubBuilder::max_bytes`] says
/// otherwise.
const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// What a hub does with a subscriber that fell so far behind that events it has not read yet
/// were evicted from the topic's log.
///
/// Either way the subscriber is told how many events it missed; nothing is lost silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LagPolicy {
    /// Skip ahead to the oldest event still held, announced by an `event: resync` whose data
    /// is the number of events skipped (in decimal). The client can then refetch full state.
    #[default]
    Resync,
    /// Send a final `event: lagged` whose data is the number of events missed (in decimal),
    /// then end the stream cleanly. A browser reconnects with its `Last-Event-ID`.
    Disconnect,
}

/// Builds a [`Hub`]: how much each topic keeps, and what happens to subscribers that lag.
#[derive(Debug, Clone)]
pub struct HubBuilder {
    max_events: usize,
    max_bytes: usize,
    lag_policy: LagPolicy,
}

impl Default for HubBuilder {
    fn default() -> Self {
        HubBuilder {
            max_events: DEFAULT_MAX_EVENTS,
            max_bytes: DEFAULT_MAX_BYTES,
            lag_policy: LagPolicy::default(),
        }
    }
}

impl HubBuilder {
    /// A builder with the defaults: 1024 events and 1 MiB per topic, [`LagPolicy::Resync`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how many events each topic keeps (at least 1): how far a subscriber may fall
    /// behind, and how far back a reconnecting client can resume.
    pub fn max_events(mut self, events: usize) -> Self {
        self.max_events = events.max(1);
        self
    }

    /// Sets how many bytes of encoded events each topic keeps (the newest event is kept
    /// whatever its size), so memory stays bounded however large events are.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Sets what happens to a subscriber that falls behind the topic's log.
    pub fn lag_policy(mut self, policy: LagPolicy) -> Self {
        self.lag_policy = policy;
        self
    }

    /// Builds the hub.
    pub fn build(self) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                config: self,
                topics: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// A set of named [`Topic`]s sharing one configuration: publish once, deliver to every
/// subscriber. Clones share the same topics.
///
/// ```
/// use futures::StreamExt;
/// use tower_sse::{Event, Hub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new();
/// let news = hub.topic("news");
/// let mut subscriber = news.subscribe();
/// news.publish(Event::from("hello"));
/// let event = subscriber.next().await.unwrap().unwrap();
/// assert_eq!(&event.to_bytes()[..], b"data: hello\nid: 1\n\n");
/// assert_eq!(hub.subscriber_count("news"), 1);
/// // In a handler: `tower_sse::response(tower_sse::SseBody::new(subscriber))`.
/// # }
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    config: HubBuilder,
    topics: Mutex<HashMap<Box<str>, Topic>>,
}

impl Hub {
    /// A hub with the default configuration (see [`HubBuilder::new`]).
    pub fn new() -> Self {
        HubBuilder::new().build()
    }

    /// A builder to configure a hub.
    pub fn builder() -> HubBuilder {
        HubBuilder::new()
    }

    /// The topic with this name, created on first use.
    ///
    /// A topic lives (with its log) until [`removed`](Hub::remove): to subscribe by a name a
    /// client chose, look it up with [`get`](Hub::get) rather than create it.
    pub fn topic(&self, name: &str) -> Topic {
        let mut topics = lock(&self.inner.topics);
        if let Some(topic) = topics.get(name) {
            return topic.clone();
        }
        let topic = Topic::new(name, &self.inner.config);
        topics.insert(name.into(), topic.clone());
        topic
    }

    /// The topic with this name, if it exists.
    pub fn get(&self, name: &str) -> Option<Topic> {
        lock(&self.inner.topics).get(name).cloned()
    }

    /// Forgets the topic. Once no [`Topic`] handle to it is left, its subscribers end after
    /// the events they have not read yet. Returns whether the topic existed.
    pub fn remove(&self, name: &str) -> bool {
        let removed = lock(&self.inner.topics).remove(name);
        removed.is_some()
    }

    /// How many topics the hub holds.
    pub fn topic_count(&self) -> usize {
        lock(&self.inner.topics).len()
    }

    /// How many subscribers the topic has (0 if there is no such topic).
    pub fn subscriber_count(&self, name: &str) -> usize {
        self.get(name).map_or(0, |topic| topic.subscriber_count())
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("topics", &self.topic_count())
            .finish()
    }
}

/// One named stream of a [`Hub`]: publish to it, subscribe to it live, or resume after a
/// client's [`LastEventId`].
///
/// A `Topic` is a publishing handle: clones share the topic, and once every handle is dropped
/// (the hub's own included, see [`Hub::remove`]) its subscribers end cleanly after the events
/// they have not read yet.
pub struct Topic {
    shared: Arc<Shared>,
}

/// What a topic's handles and subscribers share.
struct Shared {
    name: Box<str>,
    lag_policy: LagPolicy,
    state: Mutex<State>,
    /// How many times the waiting subscribers were woken (by a publish, or as the topic
    /// ends). A subscriber parked since the latest round knows, without the lock, that there
    /// is nothing new for it and that its waker is still registered.
    rounds: AtomicU64,
}

struct State {
    log: ReplayLog,
    waiters: Waiters,
    subscribers: usize,
    /// Live [`Topic`] handles; none left means nothing more can be published.
    publishers: usize,
}

impl Topic {
    fn new(name: &str, config: &HubBuilder) -> Self {
        Topic {
            shared: Arc::new(Shared {
                name: name.into(),
                lag_policy: config.lag_policy,
                state: Mutex::new(State {
                    log: ReplayLog::new(config.max_events, config.max_bytes),
                    waiters: Waiters::default(),
                    subscribers: 0,
                    publishers: 1,
                }),
                rounds: AtomicU64::new(0),
            }),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Publishes the event to every subscriber and returns the id it was given (its `id:`
    /// field, replacing any id it had). The event is encoded once, here; this never waits
    /// for a subscriber.
    pub fn publish(&self, event: impl Into<Event>) -> u64 {
        let event = event.into();
        let mut state = self.shared.lock();
        let id = state.log.push(event);
        let wakers = self.shared.take_waiting(&mut state);
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
        id
    }

    /// A subscriber that receives every event published from now on.
    pub fn subscribe(&self) -> Subscriber {
        let mut state = self.shared.lock();
        let next = state.log.next_id();
        self.shared.subscriber(&mut state, next)
    }

    /// A subscriber that first receives every event published after `last` that it missed,
    /// then every later event: no gap and no duplicate, however many publish meanwhile.
    ///
    /// Fails if events after `last` were already evicted, or if this topic never issued
    /// `last`; the handler then decides (a resync event, `204 No Content`, full state).
    pub fn subscribe_after(&self, last: &LastEventId) -> Result<Subscriber, ReplayError> {
        let mut state = self.shared.lock();
        let next = state.log.resume_point(last)?;
        Ok(self.shared.subscriber(&mut state, next))
    }

    /// How many subscribers the topic has.
    pub fn subscriber_count(&self) -> usize {
        self.shared.lock().subscribers
    }

    /// The id of the latest event published, or 0 before the first one.
    pub fn last_id(&self) -> u64 {
        self.shared.lock().log.last_id()
    }
}

impl Clone for Topic {
    fn clone(&self) -> Self {
        self.shared.lock().publishers += 1;
        Topic {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.publishers -= 1;
        if state.publishers == 0 {
            let wakers = self.shared.take_waiting(&mut state);
            drop(state);
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Topic")
            .field("name", &self.shared.name)
            .field("last_id", &state.log.last_id())
            .field("retained", &state.log.len())
            .field("subscribers", &state.subscribers)
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Takes the wakers of every waiting subscriber (to wake once the lock is released),
    /// starting a new round.
    fn take_waiting(&self, state: &mut State) -> Vec<Waker> {
        self.rounds.fetch_add(1, Ordering::Release);
        state.waiters.take_all()
    }

    /// Registers a subscriber that reads from the event with id `next` on.
    fn subscriber(self: &Arc<Self>, state: &mut State, next: u64) -> Subscriber {
        state.subscribers += 1;
        Subscriber {
            shared: Arc::clone(self),
            next,
            ready: Vec::new(),
            slot: state.waiters.insert(),
            parked: None,
            done: false,
        }
    }
}

/// Locks a mutex; a panic elsewhere while it was held leaves the data consistent here (every
/// critical section is a handful of plain updates), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One subscriber of a [`Topic`]: a stream of its events, in order, ready to be the stream of
/// an [`SseBody`](crate::SseBody).
///
/// It ends when the topic is gone (see [`Topic`]) and every event was read, or after the
/// final notice of [`LagPolicy::Disconnect`]. Idle, it costs about a hundred bytes, its slot in
/// the topic included; the events it has not read yet live once, in the topic's log, for all
/// subscribers.
pub struct Subscriber {
    shared: Arc<Shared>,
    /// The id of the next event to take from the log.
    next: u64,
    /// Events taken from the log but not yielded yet, the next one last: a subscriber that is
    /// behind takes several per lock of the topic.
    ready: Vec<Event>,
    /// Where its waker is kept in the topic's [`Waiters`].
    slot: usize,
    /// Set while it waits at the end of the log with this waker registered.
    parked: Option<Parked>,
    done: bool,
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
    /// The name of the topic it reads.
    pub fn topic(&self) -> &str {
        &self.shared.name
    }
}

impl Stream for Subscriber {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(event) = this.ready.pop() {
            return Poll::Ready(Some(Ok(event)));
        }
        if this.done {
            return Poll::Ready(None);
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
        let missed = match state.log.read(this.next, READ_AHEAD) {
            Entry::Retained(event, after) => {
                let event = event.clone();
                this.next += 1 + after.len() as u64;
                this.ready.extend(after.rev().cloned());
                if this.next == state.log.next_id() && state.publishers > 0 {
                    // At the end of a live log: register now, so that the poll that follows
                    // this event finds out it has to wait without taking the lock.
                    let registered =
                        Parked::register(&this.shared, &mut state, this.slot, parked, cx.waker());
                    this.parked = Some(registered);
                }
                drop(state);
                return Poll::Ready(Some(Ok(event)));
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
                // Idle: give back the read-ahead buffer instead of holding it while nothing flows.
                this.ready = Vec::new();
                return Poll::Pending;
            }
        };
        drop(state);
        let notice = match this.shared.lag_policy {
            LagPolicy::Resync => "resync",
            LagPolicy::Disconnect => {
                this.done = true;
                "lagged"
            }
        };
        let event = Event::new()
            .event(notice)
            .expect("a constant event name holds no CR or LF")
            .data(missed.to_string());
        Poll::Ready(Some(Ok(event)))
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
            .field("done", &self.done)
            .finish()
    }
}

/// The wakers of a topic's subscribers that wait for the next event.
///
/// Each subscriber owns a slot; the slots with a waker are listed in `waiting`, and each such
/// slot remembers its place there, so registering, unregistering and taking them all are
/// O(1) per subscriber and memory never outgrows the peak number of subscribers.
#[derive(Default)]
struct Waiters {
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
    fn insert(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        })
    }

    /// Frees the slot of a subscriber that is gone.
    fn remove(&mut self, slot: usize) {
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
    fn register(&mut self, slot: usize, waker: &Waker) {
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
    fn take_all(&mut self) -> Vec<Waker> {
        let slots = &mut self.slots;
        self.waiting
            .drain(..)
            .filter_map(|slot| slots[slot].waker.take())
            .collect()
    }
}
