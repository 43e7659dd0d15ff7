//! [`Hub`]: broadcast events to many subscribers, each event encoded once.
//!
//! A hub holds named [`Topic`]s. Publishing to a topic numbers the event, encodes it once and
//! appends it to the topic's [`ReplayLog`]; every [`Subscriber`] reads the log through its own
//! cursor, so fanning out costs a reference-count bump per subscriber, never a copy or a second
//! encoding. The log is each subscriber's bounded queue: the publisher never waits for anyone,
//! and a subscriber that falls further behind than the log reaches is handled by the hub's
//! [`LagPolicy`], never by losing events silently.
//!
//! The log lives in the process by default. With the `redis` feature, [`HubBuilder::redis`]
//! puts it in Redis Streams, so that several servers share every topic: each node reads each
//! stream once and fans out through the same local log.

mod broker;
#[cfg(feature = "redis")]
mod redis;
mod subscriber;
mod waiters;

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError, Weak,
    },
    task::Waker,
};

use crate::{
    replay::{Logged, Resume},
    BoxError, Event, EventError, LastEventId, ReplayError, ReplayLog,
};

use broker::Broker;
pub use subscriber::Subscriber;
use tokio::sync::Notify;
use waiters::Waiters;

/// How many events a topic keeps unless [`HubBuilder::max_events`] says otherwise.
const DEFAULT_MAX_EVENTS: usize = 1024;

/// How many bytes of encoded events a topic keeps unless [`HubBuilder::max_bytes`] says
/// otherwise.
const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// How long a publish waits for its node to follow a broker's stream before it fails.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a hub does with a subscriber that fell so far behind that events it has not read yet
/// were evicted from the topic's log.
///
/// Either way the subscriber is told how many events it missed; nothing is lost silently. The
/// names of the notices are set with [`HubBuilder::resync_event`] and
/// [`HubBuilder::lagged_event`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LagPolicy {
    /// Skip ahead to the oldest event still held, announced by an `event: resync` whose data
    /// is the number of events skipped (in decimal, 0 when it is not known). The client can
    /// then refetch full state.
    #[default]
    Resync,
    /// Send a final `event: lagged` whose data is the number of events missed (in decimal),
    /// then end the stream cleanly. A browser reconnects with its `Last-Event-ID`.
    Disconnect,
}

/// Why a [`Topic::publish`] failed: the broker did not acknowledge the event, so no
/// subscriber gets it. (The in-memory hub never fails.)
#[derive(Debug)]
pub struct PublishError {
    source: BoxError,
}

impl PublishError {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn new(source: impl Into<BoxError>) -> Self {
        PublishError {
            source: source.into(),
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the broker did not acknowledge the event: {}",
            self.source
        )
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Builds a [`Hub`]: how much each topic keeps, what happens to subscribers that lag, how
/// its own notices are named, and where the topics' logs live.
///
/// ```
/// use tower_sse::{Hub, LagPolicy};
///
/// let hub = Hub::builder()
///     .max_events(1_000) // per topic
///     .max_bytes(1 << 20)
///     .lag_policy(LagPolicy::Disconnect) // a subscriber that falls behind is told, then ends
///     .lagged_event("too-slow")?
///     .build();
/// # drop(hub);
/// # Ok::<(), tower_sse::EventError>(())
/// ```
#[derive(Clone)]
pub struct HubBuilder {
    max_events: usize,
    max_bytes: usize,
    lag_policy: LagPolicy,
    notices: Notices,
    broker: Option<Arc<dyn Broker>>,
    /// The Redis to keep the logs in, made a broker when the hub is built.
    #[cfg(feature = "redis")]
    redis: Option<::redis::Client>,
}

/// The hub's own events, named as the builder said.
#[derive(Debug, Clone)]
pub(crate) struct Notices {
    resync: Event,
    lagged: Event,
}

impl Notices {
    /// The notice of `policy` saying that `missed` events were skipped.
    pub(crate) fn lag(&self, policy: LagPolicy, missed: u64) -> Event {
        let notice = match policy {
            LagPolicy::Resync => &self.resync,
            LagPolicy::Disconnect => &self.lagged,
        };
        notice.clone().data(missed.to_string())
    }

    /// The resync notice with `missed` events skipped.
    pub(crate) fn resync(&self, missed: u64) -> Event {
        self.lag(LagPolicy::Resync, missed)
    }
}

impl Default for HubBuilder {
    fn default() -> Self {
        HubBuilder {
            max_events: DEFAULT_MAX_EVENTS,
            max_bytes: DEFAULT_MAX_BYTES,
            lag_policy: LagPolicy::default(),
            notices: Notices {
                resync: notice_named("resync").expect("a constant name"),
                lagged: notice_named("lagged").expect("a constant name"),
            },
            broker: None,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }
}

fn notice_named(name: &str) -> Result<Event, EventError> {
    Event::new().event(name)
}

impl HubBuilder {
    /// A builder with the defaults: 1024 events and 1 MiB per topic, [`LagPolicy::Resync`],
    /// notices named `resync` and `lagged`, logs in memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how many events each topic keeps (at least 1): how far a subscriber may fall
    /// behind, and how far back a reconnecting client can resume. With Redis it is also the
    /// stream's bound (an approximate `MAXLEN`: Redis may keep a little more).
    pub fn max_events(mut self, events: usize) -> Self {
        self.max_events = events.max(1);
        self
    }

    /// Sets how many bytes of encoded events each topic's log keeps (the newest event is kept
    /// whatever its size), so memory stays bounded however large events are.
    ///
    /// The exact bound: a topic holds at most `bytes` of events in its log (or its newest
    /// event, if that is larger), plus, for each subscriber, the events it took from the log
    /// ahead of sending them: at most [`Subscriber::READ_AHEAD`] events. Those stay alive
    /// while the subscriber holds them even once the log has evicted them.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Sets what happens to a subscriber that falls behind the topic's log.
    pub fn lag_policy(mut self, policy: LagPolicy) -> Self {
        self.lag_policy = policy;
        self
    }

    /// Names the event that announces a skip ahead (default `resync`; see
    /// [`LagPolicy::Resync`]). Fails if the name holds a CR or LF.
    pub fn resync_event(mut self, name: &str) -> Result<Self, EventError> {
        self.notices.resync = notice_named(name)?;
        Ok(self)
    }

    /// Names the final event of a subscriber that lagged (default `lagged`; see
    /// [`LagPolicy::Disconnect`]). Fails if the name holds a CR or LF.
    pub fn lagged_event(mut self, name: &str) -> Result<Self, EventError> {
        self.notices.lagged = notice_named(name)?;
        Ok(self)
    }

    /// Builds the hub.
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    pub fn build(mut self) -> Hub {
        #[cfg(feature = "redis")]
        if let Some(client) = self.redis.take() {
            self.broker = Some(redis::broker(client, self.max_events));
        }
        Hub {
            inner: Arc::new(HubInner {
                config: self,
                topics: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("max_events", &self.max_events)
            .field("max_bytes", &self.max_bytes)
            .field("lag_policy", &self.lag_policy)
            .field("broker", &self.broker.as_ref().map(|_| "redis"))
            .finish()
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
/// # async fn main() -> Result<(), tower_sse::PublishError> {
/// let hub = Hub::new();
/// let news = hub.topic("news");
/// let mut subscriber = news.subscribe();
/// let id = news.publish(Event::from("hello")).await?;
/// let event = subscriber.next().await.unwrap().unwrap();
/// assert_eq!(event.to_bytes(), format!("data: hello\nid: {id}\n\n"));
/// assert_eq!(hub.subscriber_count("news"), 1);
/// // In a handler: `tower_sse::response(tower_sse::SseBody::new(subscriber))`.
/// # Ok(())
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
    ///
    /// # Panics
    /// On a hub backed by a broker (Redis), creating a topic starts its reader on the current
    /// tokio runtime: outside of one, this panics.
    pub fn topic(&self, name: &str) -> Topic {
        let mut topics = lock(&self.inner.topics);
        if let Some(topic) = topics.get(name) {
            return topic.clone();
        }
        let topic = Topic::new(name, &self.inner.config);
        topics.insert(name.into(), topic.clone());
        drop(topics);
        if let Some(broker) = &self.inner.config.broker {
            broker.follow(Feed {
                shared: Arc::downgrade(&topic.shared),
            });
        }
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
///
/// ```
/// use futures::StreamExt;
/// use tower_sse::{Event, Hub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::PublishError> {
/// let prices = Hub::new().topic("prices");
/// let seen = prices.publish(Event::from("1.00")).await?;
/// prices.publish(Event::from("1.01")).await?;
/// // A client back with `Last-Event-ID: <seen>` gets what it missed first, then live events.
/// let mut resumed = prices.resume(Some(&seen));
/// let missed = resumed.next().await.unwrap().unwrap();
/// assert!(missed.to_bytes().starts_with(b"data: 1.01\n"));
/// # Ok(())
/// # }
/// ```
pub struct Topic {
    shared: Arc<Shared>,
}

/// What a topic's handles, subscribers and broker reader share.
pub(crate) struct Shared {
    name: Box<str>,
    lag_policy: LagPolicy,
    notices: Notices,
    broker: Option<Arc<dyn Broker>>,
    state: Mutex<State>,
    /// Set once the log follows the broker's stream (at once in memory), and the waiters for
    /// that moment.
    following: AtomicBool,
    followed: Notify,
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
        let log = match config.broker {
            None => ReplayLog::new(config.max_events, config.max_bytes),
            Some(_) => ReplayLog::for_stream(config.max_events, config.max_bytes),
        };
        Topic {
            shared: Arc::new(Shared {
                name: name.into(),
                lag_policy: config.lag_policy,
                notices: config.notices.clone(),
                broker: config.broker.clone(),
                state: Mutex::new(State {
                    log,
                    waiters: Waiters::default(),
                    subscribers: 0,
                    publishers: 1,
                }),
                following: AtomicBool::new(config.broker.is_none()),
                followed: Notify::new(),
                rounds: AtomicU64::new(0),
            }),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Publishes the event to every subscriber and returns the id it was given (its `id:`
    /// field, replacing any id it had). The event is encoded once; this never waits for a
    /// subscriber.
    ///
    /// In memory it is done at once and never fails. With a broker it is one round trip, and
    /// it fails if the broker did not acknowledge the event; an acknowledged event reaches
    /// every subscriber that stays connected, on every node.
    ///
    /// With a broker, it first waits until this node follows the topic's stream (see
    /// [`ready`](Topic::ready)), so that its own subscribers get what it publishes; if that
    /// takes more than 5 seconds (the broker is away), it fails.
    pub async fn publish(&self, event: impl Into<Event>) -> Result<LastEventId, PublishError> {
        let event = event.into();
        match &self.shared.broker {
            None => Ok(self.publish_here(event)),
            Some(broker) => {
                tokio::time::timeout(READY_TIMEOUT, self.ready())
                    .await
                    .map_err(|_| PublishError::new("the broker is not reachable yet"))?;
                broker.publish(&self.shared.name, &event).await
            }
        }
    }

    /// Resolves once this node follows the topic: at once in memory; with a broker, once its
    /// reader has joined the stream (it keeps trying while the broker is away). Subscribers
    /// made before then get the events acknowledged after that moment.
    pub async fn ready(&self) {
        loop {
            let followed = self.shared.followed.notified();
            if self.shared.following.load(Ordering::Acquire) {
                return;
            }
            followed.await;
        }
    }

    /// Publishes to the log in memory.
    fn publish_here(&self, event: Event) -> LastEventId {
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
        let next = state.log.next_position();
        Subscriber::new(
            &self.shared,
            &mut state,
            Resume::At {
                position: next,
                skip_through: None,
            },
        )
    }

    /// A subscriber that first receives every event published after `last` that it missed,
    /// then every later event: no gap and no duplicate, however many publish meanwhile.
    ///
    /// Fails if events after `last` were already evicted, or if this topic never issued
    /// `last` (another epoch: an earlier run, a removed topic); the handler then decides (a
    /// resync event, `204 No Content`, full state). With a broker, events older than this
    /// node's log are read from the broker; if the broker no longer holds them, the
    /// subscriber starts with the resync notice (data `0`) and goes live.
    pub fn subscribe_after(&self, last: &LastEventId) -> Result<Subscriber, ReplayError> {
        let mut state = self.shared.lock();
        let resume = state.log.resume_point(last)?;
        let mut subscriber = Subscriber::new(&self.shared, &mut state, resume);
        drop(state);
        if let Resume::Fetch { .. } = resume {
            subscriber.fetch_from(last);
        }
        Ok(subscriber)
    }

    /// Resumes after `last` when it can, else starts live with the resync notice (whose data
    /// is how many events were lost, 0 when not known): what an endpoint that clients resume
    /// with `Last-Event-ID` wants.
    pub fn resume(&self, last: Option<&LastEventId>) -> Subscriber {
        let Some(last) = last else {
            return self.subscribe();
        };
        match self.subscribe_after(last) {
            Ok(subscriber) => subscriber,
            Err(error) => {
                let mut subscriber = self.subscribe();
                subscriber.announce(self.shared.notices.resync(error.missed()));
                subscriber
            }
        }
    }

    /// How many subscribers the topic has.
    pub fn subscriber_count(&self) -> usize {
        self.shared.lock().subscribers
    }

    /// The id of the latest event this node's log holds, if any.
    pub fn last_id(&self) -> Option<LastEventId> {
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
}

/// A broker reader's handle to the topic it feeds.
pub(crate) struct Feed {
    shared: Weak<Shared>,
}

impl Feed {
    /// The topic, unless it is closed (every [`Topic`] handle dropped).
    fn open(&self) -> Option<Arc<Shared>> {
        let shared = self.shared.upgrade()?;
        let open = shared.lock().publishers > 0;
        open.then_some(shared)
    }

    /// Whether the topic is closed, so the reader can stop.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn is_closed(&self) -> bool {
        self.open().is_none()
    }

    /// The topic's name, unless it is closed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn name(&self) -> Option<Box<str>> {
        self.open().map(|shared| shared.name.clone())
    }

    /// The epoch the topic's log is in (empty before the broker told one).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn epoch(&self) -> Box<str> {
        self.shared
            .upgrade()
            .map_or_else(|| "".into(), |shared| shared.lock().log.epoch().into())
    }

    /// The broker's stream is in `epoch`, of which the log holds every event after `floor`
    /// from now on. When that is a change (the broker lost its data), subscribers that are
    /// live get the resync notice: what they had not read of the old epoch is gone.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn start_epoch(&self, epoch: &str, floor: u128) {
        let Some(shared) = self.open() else { return };
        let mut state = shared.lock();
        let changed = !state.log.epoch().is_empty();
        state.log.start_epoch(epoch.into(), floor);
        shared.following.store(true, Ordering::Release);
        shared.followed.notify_waiters();
        if changed {
            let notice = shared.notices.resync(0).into_shared();
            state.log.push_keyed(floor, notice);
            let wakers = shared.take_waiting(&mut state);
            drop(state);
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    /// Appends events the broker acknowledged, oldest first, each with its key and stored
    /// encoding, and wakes the subscribers. Entries that are not an event's encoding are
    /// skipped.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn append(&self, batch: Vec<(u128, bytes::Bytes)>) {
        let Some(shared) = self.open() else { return };
        let epoch = self.epoch();
        let scheme = crate::replay::IdScheme::Stream;
        let events: Vec<Logged> = batch
            .into_iter()
            .filter_map(|(key, encoded)| {
                let event = broker::stored_event(&encoded, &scheme.format(&epoch, key))?;
                Some(Logged { key, event })
            })
            .collect();
        let mut state = shared.lock();
        if *state.log.epoch() != *epoch {
            // The epoch changed meanwhile: these belong to the old one.
            return;
        }
        for logged in events {
            state.log.push_keyed(logged.key, logged.event);
        }
        let wakers = shared.take_waiting(&mut state);
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// Locks a mutex; a panic elsewhere while it was held leaves the data consistent here (every
/// critical section is a handful of plain updates), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
