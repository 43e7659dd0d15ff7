//! [`channel`]: a bounded event channel whose sending half, [`SseEmitter`], works like Spring's
//! `SseEmitter` and whose receiving half is a ready-made response body.
//!
//! Producers `send` events (waiting while the buffer is full), then `complete()` or
//! `complete_with_error(..)`. The body writes what was sent, in order, and ends the response
//! accordingly. When the stream is over for any reason, the client going away included,
//! [`SseEmitter::closed`] resolves so producers stop working for nobody.

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures::Stream;
use tokio::{
    sync::{Notify, Semaphore, TryAcquireError},
    time::{Instant, Sleep},
};

use crate::{BoxError, CloseReason, Event, SseBody, SseConnection};

/// A bounded channel of events: the [`SseEmitter`] to send them and the [`SseBody`] that writes
/// them to the client.
///
/// `capacity` is how many events may wait in the buffer (at least 1); `send` waits while it is
/// full, so a client that reads slowly slows the producer instead of growing memory.
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

/// Builds a [`channel`] with options: an overall timeout, and how errors are reported.
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    capacity: usize,
    timeout: Option<Duration>,
    timeout_event: Option<Event>,
    error_event: bool,
}

impl ChannelBuilder {
    /// A builder for a channel that buffers up to `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        ChannelBuilder {
            capacity: capacity.clamp(1, Semaphore::MAX_PERMITS),
            timeout: None,
            timeout_event: None,
            error_event: false,
        }
    }

    /// Ends the stream cleanly once `timeout` has passed since the channel was built, like
    /// `new SseEmitter(timeout)` in Spring. Events already sent are still written; later sends
    /// fail with [`CloseReason::TimedOut`]. A timeout too long to represent never fires.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// An event written last when the [`timeout`](ChannelBuilder::timeout) ends the stream,
    /// for instance one telling the client why.
    pub fn timeout_event(mut self, event: Event) -> Self {
        self.timeout_event = Some(event);
        self
    }

    /// Makes [`SseEmitter::complete_with_error`] write a final `event: error` whose data is the
    /// error's message, then end the response cleanly, instead of aborting the response.
    ///
    /// For clients that read the stream but cannot see transport errors.
    pub fn error_event(mut self, enabled: bool) -> Self {
        self.error_event = enabled;
        self
    }

    /// Creates the channel.
    ///
    /// Built while [`SseLayer`](crate::SseLayer) runs a handler, the channel is linked to that
    /// request's [`SseConnection`] (see [`SseConnection::link`]).
    pub fn build(self) -> (SseEmitter, SseBody<EventReceiver>) {
        let deadline = self
            .timeout
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                receiver: None,
                ending: None,
                closed: None,
            }),
            free_slots: Semaphore::new(self.capacity),
            closed: Notify::new(),
            emitters: AtomicUsize::new(1),
            link: OnceLock::new(),
            deadline,
        });
        let receiver = EventReceiver {
            shared: Arc::clone(&shared),
            batch: VecDeque::new(),
            taken: 0,
            timeout: deadline.map(|at| {
                Box::new(Timeout {
                    at,
                    sleep: None,
                    event: self.timeout_event,
                    fired: false,
                })
            }),
            error_event: self.error_event,
            finished: false,
        };
        let emitter = SseEmitter { shared };
        if let Some(connection) = SseConnection::current() {
            connection.link(&emitter);
        }
        (emitter, SseBody::new(receiver))
    }
}

/// What both halves of a channel share.
struct Shared {
    state: Mutex<State>,
    /// One permit per free place in the buffer; closed once the stream takes no more events.
    free_slots: Semaphore,
    /// Woken when the stream is over.
    closed: Notify,
    /// Live [`SseEmitter`] clones: when the last one goes, the stream ends cleanly.
    emitters: AtomicUsize,
    /// The response this channel feeds, once linked: told how the channel ends.
    link: OnceLock<SseConnection>,
    /// When the channel's timeout fires, if it has one.
    deadline: Option<Instant>,
}

struct State {
    /// Events sent and not yet taken by the receiver.
    queue: VecDeque<Event>,
    /// The receiver, waiting for an event or an ending.
    receiver: Option<Waker>,
    /// How the producer asked the stream to end, once it did.
    ending: Option<Ending>,
    /// Why the stream is over, once it is.
    closed: Option<CloseReason>,
}

enum Ending {
    Complete,
    /// The error, until the receiver takes it to report it.
    Error(Option<BoxError>),
    TimedOut,
}

impl State {
    /// Why a new event is refused, if it is.
    fn refusal(&self) -> Option<CloseReason> {
        self.closed.or(match self.ending {
            None => None,
            Some(Ending::Complete) => Some(CloseReason::Completed),
            Some(Ending::Error(_)) => Some(CloseReason::Error),
            Some(Ending::TimedOut) => Some(CloseReason::TimedOut),
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the state consistent: every update
        // is a single assignment or queue operation.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records how the producer wants the stream to end, unless it already is ending.
    fn end(&self, ending: Ending) {
        let mut state = self.lock();
        if state.refusal().is_some() {
            return;
        }
        state.ending = Some(ending);
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

    /// Queues an event that holds a free slot.
    fn push(&self, event: Event) -> Result<(), (Event, CloseReason)> {
        let mut state = self.lock();
        if let Some(reason) = state.refusal() {
            return Err((event, reason));
        }
        state.queue.push_back(event);
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

/// The sending half of a [`channel`]: Spring's `SseEmitter`, with backpressure.
///
/// Cheap to clone; clones feed the same stream, each event written whole, never interleaved.
/// Every failed send hands the event back with the reason. When the last clone is dropped
/// without [`complete`](SseEmitter::complete), the stream ends cleanly all the same.
pub struct SseEmitter {
    shared: Arc<Shared>,
}

impl SseEmitter {
    /// Sends an event, waiting while the buffer is full.
    ///
    /// Fails, handing the event back, once the stream takes no more events: completed, client
    /// gone, or timed out. Dropping the future before it finishes drops the event unsent.
    pub async fn send(&self, event: impl Into<Event>) -> Result<(), SendError> {
        let event = event.into();
        match self.shared.free_slots.acquire().await {
            Ok(slot) => {
                slot.forget();
                self.shared.push(event).map_err(SendError::closed)
            }
            Err(_) => Err(SendError::closed((event, self.shared.refusal()))),
        }
    }

    /// Sends an event if there is room now; otherwise hands it back at once.
    pub fn try_send(&self, event: impl Into<Event>) -> Result<(), TrySendError> {
        let event = event.into();
        match self.shared.free_slots.try_acquire() {
            Ok(slot) => {
                slot.forget();
                self.shared
                    .push(event)
                    .map_err(|(event, reason)| TrySendError::Closed(event, reason))
            }
            Err(TryAcquireError::NoPermits) => Err(TrySendError::Full(event)),
            Err(TryAcquireError::Closed) => Err(TrySendError::Closed(event, self.shared.refusal())),
        }
    }

    /// Sends an event, waiting at most `timeout` for room: gives up on a client that does not
    /// drain its stream in time ([`SendErrorKind::Timeout`]).
    pub async fn send_timeout(
        &self,
        event: impl Into<Event>,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let event = event.into();
        match tokio::time::timeout(timeout, self.shared.free_slots.acquire()).await {
            Ok(Ok(slot)) => {
                slot.forget();
                self.shared.push(event).map_err(SendError::closed)
            }
            Ok(Err(_)) => Err(SendError::closed((event, self.shared.refusal()))),
            Err(_) => Err(SendError {
                event,
                kind: SendErrorKind::Timeout,
            }),
        }
    }

    /// Ends the stream cleanly once everything already sent is written. Later sends fail with
    /// [`CloseReason::Completed`].
    pub fn complete(&self) {
        self.shared.end(Ending::Complete);
    }

    /// Ends the stream with an error once everything already sent is written: the response is
    /// aborted (HTTP/1.1: closed without its last chunk; HTTP/2: reset), so the client can
    /// tell it from a clean end. See [`ChannelBuilder::error_event`] for a gentler ending.
    pub fn complete_with_error(&self, error: impl Into<BoxError>) {
        self.shared.end(Ending::Error(Some(error.into())));
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

    /// Whether the stream is over (see [`closed`](SseEmitter::closed)).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Records the response this channel feeds (see [`SseConnection::link`]).
    pub(crate) fn set_link(&self, connection: SseConnection) {
        let _ = self.shared.link.set(connection);
    }

    /// When the channel's timeout fires, if it has one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.shared.deadline
    }

    /// How the linked response ends the channel: no more events, with the response's reason.
    pub(crate) fn closer(&self) -> impl Fn(CloseReason) + Send + Sync + 'static {
        let shared = Arc::downgrade(&self.shared);
        move |reason| {
            if let Some(shared) = shared.upgrade() {
                shared.close(reason);
            }
        }
    }
}

impl Clone for SseEmitter {
    fn clone(&self) -> Self {
        self.shared.emitters.fetch_add(1, Ordering::Relaxed);
        SseEmitter {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for SseEmitter {
    fn drop(&mut self) {
        if self.shared.emitters.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.end(Ending::Complete);
        }
    }
}

impl fmt::Debug for SseEmitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseEmitter")
            .field("closed", &self.shared.lock().closed)
            .finish_non_exhaustive()
    }
}

/// The receiving half of a [`channel`]: the stream of events inside its [`SseBody`].
pub struct EventReceiver {
    shared: Arc<Shared>,
    /// Events taken from the shared queue in one go, handed out one by one.
    batch: VecDeque<Event>,
    /// How many events of `batch` were taken: their slots are freed when it is empty again,
    /// so the buffer never holds more than the channel's capacity.
    taken: usize,
    /// Boxed: most channels have no timeout and should not pay for one.
    timeout: Option<Box<Timeout>>,
    error_event: bool,
    finished: bool,
}

/// The channel's overall timeout; the timer is made when the body is first polled, inside the
/// runtime.
struct Timeout {
    at: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Written last when the timeout ends the stream.
    event: Option<Event>,
    fired: bool,
}

impl Timeout {
    /// Whether the timeout passed just now (it fires once).
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.fired {
            return false;
        }
        let at = self.at;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        self.fired = sleep.as_mut().poll(cx).is_ready();
        self.fired
    }
}

impl EventReceiver {
    /// Ends the stream: `item` is the last thing it yields.
    fn finish(
        &mut self,
        reason: CloseReason,
        item: Option<Result<Event, BoxError>>,
    ) -> Poll<Option<Result<Event, BoxError>>> {
        self.finished = true;
        // A clean end is the layer's to report once it is written; any other end is the
        // channel's decision, which the linked response reports too.
        let reason = match self.shared.link.get() {
            Some(connection) if reason != CloseReason::Completed => connection.decide(reason),
            _ => reason,
        };
        self.shared.close(reason);
        Poll::Ready(item)
    }
}

impl Stream for EventReceiver {
    type Item = Result<Event, BoxError>;

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
            this.shared.end(Ending::TimedOut);
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
        let Some(ending) = &mut state.ending else {
            state.receiver = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let (reason, last) = match ending {
            Ending::Complete => (CloseReason::Completed, None),
            Ending::TimedOut => {
                let last = this
                    .timeout
                    .as_mut()
                    .and_then(|timeout| timeout.event.take());
                (CloseReason::TimedOut, last.map(Ok))
            }
            Ending::Error(error) => {
                let error = error
                    .take()
                    .unwrap_or_else(|| "the stream ended with an error".into());
                let last = if this.error_event {
                    Ok(Event::new()
                        .event("error")
                        .expect("a constant event name has no line break")
                        .data(error.to_string()))
                } else {
                    Err(error)
                };
                (CloseReason::Error, Some(last))
            }
        };
        drop(state);
        this.finish(reason, last)
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        // A no-op if the stream already ended: only a body dropped early is a disconnect.
        self.shared.close(CloseReason::Disconnected);
    }
}

impl fmt::Debug for EventReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReceiver")
            .field("batched", &self.batch.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// Why [`SseEmitter::send`] or [`SseEmitter::send_timeout`] failed; holds the event, which was
/// not sent.
pub struct SendError {
    event: Event,
    kind: SendErrorKind,
}

/// The reason inside a [`SendError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// The stream takes no more events, for this reason: [`CloseReason::Completed`] after
    /// `complete`, [`CloseReason::Error`] after `complete_with_error`,
    /// [`CloseReason::Disconnected`] when the client went away, [`CloseReason::TimedOut`]
    /// after the channel's timeout; on a channel linked to its response, the reason the
    /// layer reports ([`CloseReason::Shutdown`], [`CloseReason::Stalled`]...).
    Closed(CloseReason),
    /// [`send_timeout`](SseEmitter::send_timeout) waited its full time for room.
    Timeout,
}

impl SendError {
    fn closed((event, reason): (Event, CloseReason)) -> Self {
        SendError {
            event,
            kind: SendErrorKind::Closed(reason),
        }
    }

    /// Why the event was not sent.
    pub fn kind(&self) -> SendErrorKind {
        self.kind
    }

    /// The event that was not sent.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// Takes back the event that was not sent.
    pub fn into_event(self) -> Event {
        self.event
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SendErrorKind::Closed(reason) => write!(f, "event not sent: {reason}"),
            SendErrorKind::Timeout => {
                f.write_str("event not sent: the client did not make room in time")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// Why [`SseEmitter::try_send`] failed; holds the event, which was not sent.
#[non_exhaustive]
pub enum TrySendError {
    /// The buffer is full: the client has not caught up yet.
    Full(Event),
    /// The stream takes no more events, for this reason.
    Closed(Event, CloseReason),
}

impl TrySendError {
    /// Takes back the event that was not sent.
    pub fn into_event(self) -> Event {
        match self {
            TrySendError::Full(event) | TrySendError::Closed(event, _) => event,
        }
    }
}

impl fmt::Debug for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_, reason) => write!(f, "Closed(.., {reason:?})"),
        }
    }
}

impl fmt::Display for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("event not sent: the buffer is full"),
            TrySendError::Closed(_, reason) => write!(f, "event not sent: {reason}"),
        }
    }
}

impl std::error::Error for TrySendError {}
