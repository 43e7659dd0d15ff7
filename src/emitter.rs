//! [`channel`]: a bounded channel whose sending half, [`Emitter`] ([`SseEmitter`] for
//! Server-Sent Events), works like Spring's `ResponseBodyEmitter` and whose receiving half is a
//! ready-made response body.
//!
//! Producers `send` items (waiting while the buffer is full), then `complete()` or
//! `complete_with_error(..)`. The body writes what was sent, in order, and ends the response
//! accordingly. When the stream is over for any reason, the client going away included,
//! [`Emitter::closed`] resolves so producers stop working for nobody. One channel serves every
//! [framing](crate::framing): each item is encoded into its wire bytes when it is sent.

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures::Stream;
use tokio::{
    sync::{Notify, Semaphore, SemaphorePermit, TryAcquireError},
    time::{Instant, Sleep},
};

use crate::{
    connection::Close,
    framing::{Encode, Framing, Sse},
    BoxError, CloseReason, Event, EventError, FramedBody, SseBody, SseConnection,
};

/// The sending half of a Server-Sent Events [`channel`].
///
/// ```
/// use tower_sse::{test::collect_events, CloseReason, Event};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::BoxError> {
/// let (emitter, body) = tower_sse::channel(2);
/// tokio::spawn(async move {
///     emitter.send("plain text").await?; // waits while 2 events wait unread
///     emitter.send(Event::new().event("answer")?.id("1")?.data("42")).await?;
///     emitter.complete();
///     assert_eq!(emitter.closed().await, CloseReason::Completed);
///     Ok::<_, tower_sse::BoxError>(())
/// });
/// let events = collect_events(body).await?;
/// assert_eq!((events[1].event.as_str(), events[1].data.as_str()), ("answer", "42"));
/// # Ok(())
/// # }
/// ```
pub type SseEmitter = Emitter<Sse>;

/// The receiving half of a Server-Sent Events [`channel`], inside its [`SseBody`].
pub type EventReceiver = Receiver<Sse>;

/// A bounded channel of events: the [`SseEmitter`] to send them and the [`SseBody`] that writes
/// them to the client.
///
/// `capacity` is how many events may wait in the buffer (at least 1); `send` waits while it is
/// full, so a client that reads slowly slows the producer instead of growing memory.
///
/// The body writes events only: **keep-alives, the streaming headers, time limits and graceful
/// shutdown come from [`SseLayer`](crate::SseLayer)** around the service. Other framings
/// (NDJSON, JSON Lines, JSON text sequences, text) have [`framed_channel`]. An axum handler
/// returns the body as it is with the crate's `axum` feature (see [`SseBody`]).
///
/// ```
/// # async fn handler() -> http::Response<tower_sse::SseBody<tower_sse::EventReceiver>> {
/// let (emitter, body) = tower_sse::channel(16);
/// tokio::spawn(async move {
///     for piece in ["Hel", "lo"] {
///         if emitter.send(piece).await.is_err() {
///             return; // the client is gone
///         }
///     }
///     emitter.complete();
/// });
/// tower_sse::response(body)
/// # }
/// ```
pub fn channel(capacity: usize) -> (SseEmitter, SseBody<EventReceiver>) {
    ChannelBuilder::new(capacity).build()
}

/// A bounded channel in any [framing](crate::framing): the [`Emitter`] encodes each item as it
/// is sent, the body writes them. Like [`channel`], with the same backpressure, endings and
/// close reasons; keep-alives (SSE only), headers, time limits and shutdown come from
/// [`SseLayer`](crate::SseLayer).
///
/// ```
/// # #[cfg(feature = "json")]
/// # async fn handler() {
/// use tower_sse::framing::Ndjson;
///
/// let (emitter, body) = tower_sse::framed_channel(Ndjson, 16);
/// tokio::spawn(async move {
///     for n in 0..3 {
///         if emitter.send(serde_json::json!({ "n": n })).await.is_err() {
///             return; // the client is gone
///         }
///     }
///     emitter.complete();
/// });
/// let response = tower_sse::framed_response(body); // content-type: application/x-ndjson
/// # drop(response);
/// # }
/// ```
pub fn framed_channel<F>(framing: F, capacity: usize) -> (Emitter<F>, FramedBody<F, Receiver<F>>)
where
    F: Framing + Encode<<F as Framing>::Item>,
{
    ChannelBuilder::framed(framing, capacity).build()
}

/// Builds a [`channel`] with options: an overall timeout, and how errors are reported.
///
/// ```
/// use std::time::Duration;
/// use tower_sse::{test::collect_events, ChannelBuilder, Event};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::BoxError> {
/// let (emitter, body) = ChannelBuilder::new(16)
///     .timeout(Duration::from_secs(300)) // Spring's `new SseEmitter(300_000L)`
///     .timeout_event(Event::new().event("timeout")?)
///     .error_event(true) // `complete_with_error` writes a `stream-error` event
///     .build();
/// emitter.send("working").await?;
/// emitter.complete_with_error("the model went away");
/// let events = collect_events(body).await?;
/// assert_eq!(events[1].event, "stream-error");
/// assert_eq!(events[1].data, "the model went away");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ChannelBuilder<F: Framing = Sse> {
    capacity: usize,
    timeout: Option<Duration>,
    timeout_item: Option<F::Item>,
    error_record: bool,
    framing: F,
}

impl ChannelBuilder<Sse> {
    /// A builder for an SSE channel that buffers up to `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        ChannelBuilder::framed(Sse::default(), capacity)
    }

    /// An event written last when the [`timeout`](ChannelBuilder::timeout) ends the stream,
    /// for instance one telling the client why.
    pub fn timeout_event(mut self, event: Event) -> Self {
        self.timeout_item = Some(event);
        self
    }

    /// Names the event that [`error_event`](ChannelBuilder::error_event) writes (default
    /// `stream-error`; see [`Sse::error_event_name`]).
    pub fn error_event_name(mut self, name: impl AsRef<str>) -> Result<Self, EventError> {
        self.framing = self.framing.error_event_name(name)?;
        Ok(self)
    }
}

impl<F: Framing> ChannelBuilder<F> {
    /// A builder for a channel in this framing that buffers up to `capacity` items (at
    /// least 1).
    pub fn framed(framing: F, capacity: usize) -> Self {
        ChannelBuilder {
            capacity: capacity.clamp(1, Semaphore::MAX_PERMITS),
            timeout: None,
            timeout_item: None,
            error_record: false,
            framing,
        }
    }

    /// Ends the stream cleanly once `timeout` has passed since the channel was built, like
    /// `new SseEmitter(timeout)` in Spring. Items already sent are still written; later sends
    /// fail with [`CloseReason::TimedOut`]. A timeout too long to represent never fires.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Makes [`Emitter::complete_with_error`] write the framing's error record, then end the
    /// response cleanly, instead of aborting the response: for SSE an event named
    /// `stream-error` (see [`error_event_name`](ChannelBuilder::error_event_name)) whose data
    /// is the error's message; for NDJSON, JSON Lines and JSON text sequences the object
    /// `{"error": "<message>"}`, as Ollama does. [`Text`](crate::framing::Text) has no error
    /// record: its responses are aborted all the same.
    ///
    /// For clients that read the stream but cannot see transport errors.
    pub fn error_event(mut self, enabled: bool) -> Self {
        self.error_record = enabled;
        self
    }

    /// Creates the channel.
    ///
    /// Built while [`SseLayer`](crate::SseLayer) runs a handler, the channel is linked to that
    /// request's [`SseConnection`] (see [`SseConnection::link`]).
    pub fn build(self) -> (Emitter<F>, FramedBody<F, Receiver<F>>)
    where
        F: Encode<<F as Framing>::Item>,
    {
        let deadline = self
            .timeout
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                receiver: None,
                ending: None,
                error: None,
                closed: None,
                link: None,
            }),
            free_slots: Semaphore::new(self.capacity),
            closed: Notify::new(),
            emitters: AtomicUsize::new(1),
            deadline,
        });
        let receiver = Receiver {
            shared: Arc::clone(&shared),
            batch: VecDeque::new(),
            taken: 0,
            timeout: self.timeout.map(|_| {
                Box::new(Timeout {
                    at: deadline,
                    sleep: None,
                    item: self.timeout_item,
                    fired: false,
                })
            }),
            error_framing: self.error_record.then(|| Box::new(self.framing)),
            finished: false,
        };
        let emitter = Emitter { shared };
        if let Some(connection) = SseConnection::current() {
            connection.link(&emitter);
        }
        (emitter, FramedBody::new(receiver))
    }
}

/// What both halves of a channel share.
struct Shared<I> {
    state: Mutex<State<I>>,
    /// One permit per free place in the buffer; closed once the stream takes no more events.
    free_slots: Semaphore,
    /// Woken when the stream is over.
    closed: Notify,
    /// Live [`Emitter`] clones: when the last one goes, the stream ends cleanly.
    emitters: AtomicUsize,
    /// When the channel's timeout fires, if it has one.
    deadline: Option<Instant>,
}

struct State<I> {
    /// Items sent and not yet taken by the receiver.
    queue: VecDeque<I>,
    /// The receiver, waiting for an event or an ending.
    receiver: Option<Waker>,
    /// How the producer asked the stream to end, once it did.
    ending: Option<Ending>,
    /// The producer's error, until the receiver takes it to report it.
    error: Option<BoxError>,
    /// Why the stream is over, once it is.
    closed: Option<CloseReason>,
    /// The response this channel feeds, once linked: told how the channel ends.
    link: Option<SseConnection>,
}

#[derive(Clone, Copy)]
enum Ending {
    Complete,
    /// The producer failed (with `State::error`).
    Error,
    TimedOut,
}

impl<I> State<I> {
    /// Why a new item is refused, if it is.
    fn refusal(&self) -> Option<CloseReason> {
        self.closed.or(match self.ending {
            None => None,
            Some(Ending::Complete) => Some(CloseReason::Completed),
            Some(Ending::Error) => Some(CloseReason::Error),
            Some(Ending::TimedOut) => Some(CloseReason::TimedOut),
        })
    }
}

impl<I: Send> Close for Shared<I> {
    fn close(&self, reason: CloseReason) {
        Shared::close(self, reason);
    }
}

impl<I> Shared<I> {
    fn lock(&self) -> MutexGuard<'_, State<I>> {
        // A panic elsewhere while holding the lock leaves the state consistent: every update
        // is a single assignment or queue operation.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records how the producer wants the stream to end (and with which error), unless it
    /// already is ending.
    fn end(&self, ending: Ending, error: Option<BoxError>) {
        let mut state = self.lock();
        if state.refusal().is_some() {
            return;
        }
        state.ending = Some(ending);
        state.error = error;
        let receiver = state.receiver.take();
        drop(state);
        self.free_slots.close();
        if let Some(waker) = receiver {
            waker.wake();
        }
    }

    /// Marks the stream as over and tells everyone waiting on it.
    fn close(&self, reason: CloseReason) {
        let mut state = self.lock();
        if state.closed.is_some() {
            return;
        }
        state.closed = Some(reason);
        let dropped = std::mem::take(&mut state.queue);
        drop(state);
        drop(dropped);
        self.free_slots.close();
        self.closed.notify_waiters();
    }

    /// Queues an item that holds a free slot.
    fn push(&self, item: I) -> Result<(), (I, CloseReason)> {
        let mut state = self.lock();
        if let Some(reason) = state.refusal() {
            return Err((item, reason));
        }
        state.queue.push_back(item);
        let receiver = state.receiver.take();
        drop(state);
        if let Some(waker) = receiver {
            waker.wake();
        }
        Ok(())
    }

    fn refusal(&self) -> CloseReason {
        // The slots are only closed once a refusal is recorded.
        self.lock().refusal().unwrap_or(CloseReason::Completed)
    }
}

/// The sending half of a channel: Spring's `ResponseBodyEmitter`, with backpressure.
/// [`SseEmitter`] is the Server-Sent Events case; [`framed_channel`] makes the others.
///
/// Cheap to clone; clones feed the same stream, each item written whole, never interleaved.
/// Every failed send hands the item back with the reason. When the last clone is dropped
/// without [`complete`](Emitter::complete), the stream ends cleanly all the same.
///
/// ```
/// use tower_sse::{framing::Text, CloseReason, SendErrorKind};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (emitter, body) = tower_sse::framed_channel(Text, 4);
/// let second = emitter.clone();
/// emitter.send("from one, ").await.unwrap();
/// second.send("from the other").await.unwrap();
/// drop(body); // the client went away
/// let unsent = second.send("too late").await.unwrap_err();
/// assert_eq!(unsent.kind(), SendErrorKind::Closed(CloseReason::Disconnected));
/// assert_eq!(unsent.into_item(), "too late"); // handed back, not lost
/// # }
/// ```
pub struct Emitter<F: Framing = Sse> {
    shared: Arc<Shared<F::Item>>,
}

/// What a failed send of `T` hands back: the [`Event`] for SSE, the value for the JSON
/// framings, the `String` for text.
pub type Unsent<F, T> = <F as Encode<T>>::Unsent;

impl<F: Framing> Emitter<F> {
    /// Sends an item, waiting while the buffer is full: anything `Into<Event>` for SSE, any
    /// `serde::Serialize` value for the JSON framings, text for [`Text`](crate::framing::Text).
    /// It is encoded into its wire bytes once there is room (so the wait holds the item as it
    /// was given).
    ///
    /// Fails, handing the item back, once the stream takes no more items: completed, client
    /// gone, or timed out; or when the framing cannot encode it ([`SendErrorKind::Invalid`]).
    /// Dropping the future before it finishes drops the item unsent.
    pub async fn send<T>(&self, item: T) -> Result<(), SendError<Unsent<F, T>>>
    where
        F: Encode<T>,
    {
        let room = self
            .shared
            .free_slots
            .acquire()
            .await
            .map(SemaphorePermit::forget);
        self.push(item, room.is_ok())
    }

    /// Encodes the item and queues it in the slot just taken (`room`: the slot's permit was
    /// forgotten, and the receiver gives it back), or hands it back with why not. A slot taken
    /// for an item that cannot be encoded is given back at once.
    fn push<T>(&self, item: T, room: bool) -> Result<(), SendError<Unsent<F, T>>>
    where
        F: Encode<T>,
    {
        let (encoded, kept) = match F::encode(item) {
            Ok(encoded) => encoded,
            Err(invalid) => {
                if room {
                    self.shared.free_slots.add_permits(1);
                }
                return Err(SendError::invalid(invalid));
            }
        };
        if !room {
            return Err(SendError::closed(
                F::unsent(encoded, kept),
                self.shared.refusal(),
            ));
        }
        self.shared
            .push(encoded)
            .map_err(|(encoded, reason)| SendError::closed(F::unsent(encoded, kept), reason))
    }

    /// Sends an item if there is room now; otherwise hands it back at once.
    pub fn try_send<T>(&self, item: T) -> Result<(), TrySendError<Unsent<F, T>>>
    where
        F: Encode<T>,
    {
        let (encoded, kept) = match F::encode(item) {
            Ok(encoded) => encoded,
            Err((item, error)) => return Err(TrySendError::Invalid(item, error)),
        };
        match self.shared.free_slots.try_acquire() {
            Ok(slot) => {
                slot.forget();
                self.shared.push(encoded).map_err(|(encoded, reason)| {
                    TrySendError::Closed(F::unsent(encoded, kept), reason)
                })
            }
            Err(TryAcquireError::NoPermits) => Err(TrySendError::Full(F::unsent(encoded, kept))),
            Err(TryAcquireError::Closed) => Err(TrySendError::Closed(
                F::unsent(encoded, kept),
                self.shared.refusal(),
            )),
        }
    }

    /// Sends an item, waiting at most `timeout` for room: gives up on a client that does not
    /// drain its stream in time ([`SendErrorKind::Timeout`]).
    pub async fn send_timeout<T>(
        &self,
        item: T,
        timeout: Duration,
    ) -> Result<(), SendError<Unsent<F, T>>>
    where
        F: Encode<T>,
    {
        match tokio::time::timeout(timeout, self.shared.free_slots.acquire()).await {
            Ok(acquired) => self.push(item, acquired.map(SemaphorePermit::forget).is_ok()),
            Err(_) => match F::encode(item) {
                Ok((encoded, kept)) => Err(SendError {
                    item: F::unsent(encoded, kept),
                    kind: SendErrorKind::Timeout,
                    cause: None,
                }),
                Err(invalid) => Err(SendError::invalid(invalid)),
            },
        }
    }

    /// Ends the stream cleanly once everything already sent is written. Later sends fail with
    /// [`CloseReason::Completed`].
    pub fn complete(&self) {
        self.shared.end(Ending::Complete, None);
    }

    /// Ends the stream with an error once everything already sent is written: the response is
    /// aborted (HTTP/1.1: closed without its last chunk; HTTP/2: reset), so the client can
    /// tell it from a clean end. With [`ChannelBuilder::error_event`], the framing's error
    /// record is written last instead and the response ends cleanly. Either way nothing is
    /// written after it, whatever other clones send meanwhile.
    ///
    /// hyper discards a failed response's unwritten frames, so the abort waits for the items
    /// sent just before it to be written: one poll in the body (enough over HTTP/1.1), and
    /// behind [`SseLayer`](crate::SseLayer) 20 ms more (over HTTP/2 another task writes).
    /// Items a client is not reading are lost to an abort either way; when every item must
    /// arrive, end with the error record.
    pub fn complete_with_error(&self, error: impl Into<BoxError>) {
        self.shared.end(Ending::Error, Some(error.into()));
    }

    /// Resolves with the reason once the stream is over: written to the end, failed, timed
    /// out, or dropped because the client went away. Producers use it to stop early.
    pub async fn closed(&self) -> CloseReason {
        let mut notified = std::pin::pin!(self.shared.closed.notified());
        loop {
            notified.as_mut().enable();
            if let Some(reason) = self.shared.lock().closed {
                return reason;
            }
            notified.as_mut().await;
            notified.set(self.shared.closed.notified());
        }
    }

    /// Whether the stream is over (see [`closed`](Emitter::closed)).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Records the response this channel feeds (see [`SseConnection::link`]).
    pub(crate) fn set_link(&self, connection: SseConnection) {
        let mut state = self.shared.lock();
        if state.link.is_none() {
            state.link = Some(connection);
        }
    }

    /// When the channel's timeout fires, if it has one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.shared.deadline
    }

    /// How the linked response ends the channel: no more items, with the response's reason.
    pub(crate) fn as_linked(&self) -> Weak<dyn Close> {
        let shared: Weak<Shared<F::Item>> = Arc::downgrade(&self.shared);
        shared
    }
}

impl<F: Framing> Clone for Emitter<F> {
    fn clone(&self) -> Self {
        self.shared.emitters.fetch_add(1, Ordering::Relaxed);
        Emitter {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<F: Framing> Drop for Emitter<F> {
    fn drop(&mut self) {
        if self.shared.emitters.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.end(Ending::Complete, None);
        }
    }
}

impl<F: Framing> fmt::Debug for Emitter<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter")
            .field("closed", &self.shared.lock().closed)
            .finish_non_exhaustive()
    }
}

/// The receiving half of a channel: the stream of encoded items inside its [`FramedBody`]
/// ([`EventReceiver`] for SSE).
pub struct Receiver<F: Framing = Sse> {
    shared: Arc<Shared<F::Item>>,
    /// Items taken from the shared queue in one go, handed out one by one.
    batch: VecDeque<F::Item>,
    /// How many items of `batch` were taken: their slots are freed when it is empty again,
    /// so the buffer never holds more than the channel's capacity.
    taken: usize,
    /// Boxed: most channels have no timeout and should not pay for one.
    timeout: Option<Box<Timeout<F::Item>>>,
    /// The framing that writes the error record, when the channel was asked for one (boxed:
    /// most channels never need it and should not pay for its room).
    error_framing: Option<Box<F>>,
    finished: bool,
}

/// The channel's overall timeout; the timer is made when the body is first polled, inside the
/// runtime.
struct Timeout<I> {
    /// `None` for a timeout too far away to ever pass.
    at: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Written last when the timeout ends the stream.
    item: Option<I>,
    fired: bool,
}

impl<I> Timeout<I> {
    /// Whether the timeout passed just now (it fires once).
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.at.filter(|_| !self.fired) else {
            return false;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        self.fired = sleep.as_mut().poll(cx).is_ready();
        self.fired
    }
}

impl<F: Framing> Receiver<F> {
    /// Ends the stream: `item` is the last thing it yields.
    fn finish(
        &mut self,
        reason: CloseReason,
        item: Option<Result<F::Item, BoxError>>,
    ) -> Poll<Option<Result<F::Item, BoxError>>> {
        self.finished = true;
        // A clean end is the layer's to report once it is written; any other end is the
        // channel's decision, which the linked response reports too.
        let link = self.shared.lock().link.clone();
        let reason = match link {
            Some(connection) if reason != CloseReason::Completed => connection.decide(reason),
            _ => reason,
        };
        self.shared.close(reason);
        Poll::Ready(item)
    }
}

impl<F: Framing> Stream for Receiver<F> {
    type Item = Result<F::Item, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(event) = this.batch.pop_front() {
            return Poll::Ready(Some(Ok(event)));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        if this.taken > 0 {
            this.shared
                .free_slots
                .add_permits(std::mem::take(&mut this.taken));
        }
        if this
            .timeout
            .as_mut()
            .is_some_and(|timeout| timeout.poll_fired(cx))
        {
            this.shared.end(Ending::TimedOut, None);
        }
        let mut state = this.shared.lock();
        if state.closed.is_some() {
            // Ended by the linked response, which writes nothing more of this channel.
            drop(state);
            this.finished = true;
            return Poll::Ready(None);
        }
        if !state.queue.is_empty() {
            std::mem::swap(&mut state.queue, &mut this.batch);
            drop(state);
            this.taken = this.batch.len();
            return Poll::Ready(this.batch.pop_front().map(Ok));
        }
        let Some(ending) = state.ending else {
            state.receiver = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let (reason, last) = match ending {
            Ending::Complete => (CloseReason::Completed, None),
            Ending::TimedOut => {
                let last = this
                    .timeout
                    .as_mut()
                    .and_then(|timeout| timeout.item.take());
                (CloseReason::TimedOut, last.map(Ok))
            }
            Ending::Error => {
                let error = state
                    .error
                    .take()
                    .unwrap_or_else(|| "the stream ended with an error".into());
                let record = this
                    .error_framing
                    .as_ref()
                    .and_then(|framing| framing.error_item(&error.to_string()));
                let last = record.ok_or(error);
                (CloseReason::Error, Some(last))
            }
        };
        drop(state);
        this.finish(reason, last)
    }
}

impl<F: Framing> Drop for Receiver<F> {
    fn drop(&mut self) {
        // A no-op if the stream already ended: only a body dropped early is a disconnect.
        self.shared.close(CloseReason::Disconnected);
    }
}

impl<F: Framing> fmt::Debug for Receiver<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("batched", &self.batch.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// Why [`Emitter::send`] or [`Emitter::send_timeout`] failed; holds the item, which was not
/// sent: the [`Event`] for SSE, the value for the JSON framings.
pub struct SendError<T = Event> {
    item: T,
    kind: SendErrorKind,
    /// Why the framing could not encode the item, for [`SendErrorKind::Invalid`].
    cause: Option<BoxError>,
}

/// The reason inside a [`SendError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// The stream takes no more items, for this reason: [`CloseReason::Completed`] after
    /// `complete`, [`CloseReason::Error`] after `complete_with_error`,
    /// [`CloseReason::Disconnected`] when the client went away, [`CloseReason::TimedOut`]
    /// after the channel's timeout; on a channel linked to its response, the reason the
    /// layer reports ([`CloseReason::Shutdown`], [`CloseReason::Stalled`]...).
    Closed(CloseReason),
    /// [`send_timeout`](Emitter::send_timeout) waited its full time for room.
    Timeout,
    /// The framing could not encode the item (a value serde refuses to serialise, such as a
    /// map with non-string keys); the error's `source` says why. Never for SSE.
    Invalid,
}

impl<T> SendError<T> {
    fn closed(item: T, reason: CloseReason) -> Self {
        SendError {
            item,
            kind: SendErrorKind::Closed(reason),
            cause: None,
        }
    }

    fn invalid((item, cause): (T, BoxError)) -> Self {
        SendError {
            item,
            kind: SendErrorKind::Invalid,
            cause: Some(cause),
        }
    }

    /// Why the item was not sent.
    pub fn kind(&self) -> SendErrorKind {
        self.kind
    }

    /// The item that was not sent.
    pub fn item(&self) -> &T {
        &self.item
    }

    /// Takes back the item that was not sent.
    pub fn into_item(self) -> T {
        self.item
    }
}

impl SendError<Event> {
    /// The event that was not sent.
    pub fn event(&self) -> &Event {
        &self.item
    }

    /// Takes back the event that was not sent.
    pub fn into_event(self) -> Event {
        self.item
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("kind", &self.kind)
            .field("cause", &self.cause)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.cause) {
            (SendErrorKind::Closed(reason), _) => write!(f, "not sent: {reason}"),
            (SendErrorKind::Timeout, _) => {
                f.write_str("not sent: the client did not make room in time")
            }
            (SendErrorKind::Invalid, Some(cause)) => {
                write!(f, "not sent: the item could not be encoded: {cause}")
            }
            (SendErrorKind::Invalid, None) => {
                f.write_str("not sent: the item could not be encoded")
            }
        }
    }
}

impl<T> std::error::Error for SendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

/// Why [`Emitter::try_send`] failed; holds the item, which was not sent.
#[non_exhaustive]
pub enum TrySendError<T = Event> {
    /// The buffer is full: the client has not caught up yet.
    Full(T),
    /// The stream takes no more items, for this reason.
    Closed(T, CloseReason),
    /// The framing could not encode the item, for this reason. Never for SSE.
    Invalid(T, BoxError),
}

impl<T> TrySendError<T> {
    /// Takes back the item that was not sent.
    pub fn into_item(self) -> T {
        match self {
            TrySendError::Full(item)
            | TrySendError::Closed(item, _)
            | TrySendError::Invalid(item, _) => item,
        }
    }
}

impl TrySendError<Event> {
    /// Takes back the event that was not sent.
    pub fn into_event(self) -> Event {
        self.into_item()
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_, reason) => write!(f, "Closed(.., {reason:?})"),
            TrySendError::Invalid(_, cause) => write!(f, "Invalid(.., {cause:?})"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("not sent: the buffer is full"),
            TrySendError::Closed(_, reason) => write!(f, "not sent: {reason}"),
            TrySendError::Invalid(_, cause) => {
                write!(f, "not sent: the item could not be encoded: {cause}")
            }
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrySendError::Invalid(_, cause) => Some(&**cause),
            _ => None,
        }
    }
}
