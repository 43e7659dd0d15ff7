//! [`SseConnection`]: the handle [`SseLayer`](crate::SseLayer) puts into every request, which
//! tells the application when and why the response stream ended, and [`CloseInfo`], the summary
//! its `on_close` hook receives.
//!
//! It is also where the layer and a [`channel`](crate::channel) agree on one reason: a channel
//! linked to the handle (automatically when it is built while the layer polls the handler, or
//! with [`SseConnection::link`]) stops taking events the moment the layer decides to end the
//! stream, and reports the layer's reason; the layer reports the channel's own ending (its
//! timeout, an error) in turn.

use std::{
    fmt,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use http::StatusCode;
use tokio::{sync::Notify, time::Instant};

use crate::{
    framing::Framing, guard::ConnectionHandle, guard::DeadlineEntry, CloseReason, Emitter,
};

tokio::task_local! {
    /// The handle of the request whose service future the layer is polling.
    static CURRENT: SseConnection;
}

/// A handle on one response, found in the request extensions of every request that passed
/// through [`SseLayer`](crate::SseLayer).
///
/// Producers that generate events for a client await [`closed`](SseConnection::closed) to stop
/// as soon as the response is over, whether it completed, the client went away or stopped
/// reading, it failed, the server is shutting down or a time limit passed. With the `axum`
/// feature it is also an extractor.
///
/// ```
/// use http::Request;
/// use tower_sse::SseConnection;
///
/// async fn handler(request: Request<String>) {
///     if let Some(connection) = request.extensions().get::<SseConnection>().cloned() {
///         tokio::spawn(async move {
///             let reason = connection.closed().await;
///             println!("stream over: {reason}");
///         });
///     }
/// }
/// ```
#[derive(Clone)]
pub struct SseConnection {
    state: Arc<ConnectionState>,
}

/// What a linked channel offers the response: a way to stop taking events, with the reason.
pub(crate) trait Close: Send + Sync {
    /// Takes no more events, and reports `reason` as the channel's end.
    fn close(&self, reason: CloseReason);
}

/// A linked channel, held weakly: the response never keeps a channel alive.
type Linked = Weak<dyn Close>;

/// What the clones of a handle share.
struct ConnectionState {
    ending: Mutex<Ending>,
    closed: Notify,
    /// The guarded connection the request arrived on, if any, with what the guard needs.
    guarded: Option<Box<Guarded>>,
}

/// What the handle's clones share under one lock: how far the response is in ending, who
/// must hear of it, and what the service answered.
#[derive(Default)]
struct Ending {
    /// Why the response is ending, set as soon as the layer (or a linked channel) decides it:
    /// the reason every party reports.
    decided: Option<CloseReason>,
    /// Why the response ended, set once it is over.
    over: Option<CloseReason>,
    /// The first linked channel (usually the only one), told once the ending is decided.
    linked: Option<Linked>,
    /// Any further linked channels (rare: a boxed slice, no room kept for more).
    more_linked: Box<[Linked]>,
    /// The response's status, once the service answered.
    status: Option<StatusCode>,
    /// Whether the response is a stream the layer manages.
    streaming: bool,
}

impl Ending {
    /// Takes the linked channels, to tell them the reason outside the lock.
    fn take_linked(&mut self) -> impl Iterator<Item = Linked> {
        self.linked
            .take()
            .into_iter()
            .chain(std::mem::take(&mut self.more_linked).into_vec())
    }
}

/// What a response on a guarded connection keeps for the guard.
struct Guarded {
    handle: ConnectionHandle,
    /// How long a stream that must end may take to do so before its connection is closed.
    grace: Duration,
    /// The latest moment this stream may still be open, registered with the guard.
    deadline: Mutex<Option<DeadlineEntry>>,
}

/// Tells each linked channel that still exists why the response ends.
fn tell(linked: impl Iterator<Item = Linked>, reason: CloseReason) {
    for channel in linked {
        if let Some(channel) = channel.upgrade() {
            channel.close(reason);
        }
    }
}

impl SseConnection {
    /// A handle on a response that has not ended yet, on `guard`'s connection if it has one.
    pub(crate) fn new(guard: Option<ConnectionHandle>, grace: Duration) -> Self {
        SseConnection {
            state: Arc::new(ConnectionState {
                ending: Mutex::default(),
                closed: Notify::new(),
                guarded: guard.map(|handle| {
                    Box::new(Guarded {
                        handle,
                        grace,
                        deadline: Mutex::new(None),
                    })
                }),
            }),
        }
    }

    /// The handle of the request whose handler the layer is running now, if any: a channel
    /// built there links itself to it.
    pub(crate) fn current() -> Option<SseConnection> {
        CURRENT.try_with(SseConnection::clone).ok()
    }

    /// Runs `f` (a poll of the request's service future) with this handle as the current one.
    pub(crate) fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.clone(), f)
    }

    /// Links a channel to this response, so that both report one reason for the end.
    ///
    /// Once the layer decides to end the stream (time limit, shutdown, the client gone or
    /// stalled), the channel takes no more events: `send` and `try_send` fail at once, a send
    /// waiting for room wakes up and fails, and [`Emitter::closed`] resolves, all with the
    /// layer's reason. A channel built inside a handler behind the layer links itself; call
    /// this for channels built elsewhere (in a spawned task, say).
    pub fn link<F: Framing>(&self, emitter: &Emitter<F>) {
        emitter.set_link(self.clone());
        if let Some(at) = emitter.deadline() {
            self.end_by(at);
        }
        let channel = emitter.as_linked();
        let mut ending = lock(&self.state.ending);
        if let Some(reason) = ending.decided {
            drop(ending);
            tell(std::iter::once(channel), reason);
        } else if ending.linked.is_none() {
            ending.linked = Some(channel);
        } else {
            let mut more = std::mem::take(&mut ending.more_linked).into_vec();
            more.push(channel);
            ending.more_linked = more.into_boxed_slice();
        }
    }

    /// Decides why the stream ends, unless that was decided already, and tells the linked
    /// channels; returns the reason decided.
    pub(crate) fn decide(&self, reason: CloseReason) -> CloseReason {
        let mut ending = lock(&self.state.ending);
        let reason = *ending.decided.get_or_insert(reason);
        let linked = ending.take_linked();
        drop(ending);
        tell(linked, reason);
        reason
    }

    /// Records what the service answered: the status, and whether it is a stream the layer
    /// manages.
    pub(crate) fn responded(&self, status: StatusCode, streaming: bool) {
        let mut ending = lock(&self.state.ending);
        ending.status = Some(status);
        ending.streaming = streaming;
    }

    /// What [`responded`](Self::responded) recorded: the status (`None` before the service
    /// answered) and whether the response is a managed stream.
    pub(crate) fn response_kind(&self) -> (Option<StatusCode>, bool) {
        let ending = lock(&self.state.ending);
        (ending.status, ending.streaming)
    }

    /// Why the guard closed the connection under this response, if it did.
    pub(crate) fn guard_reason(&self) -> Option<CloseReason> {
        self.state.guarded.as_ref()?.handle.close_reason()
    }

    /// Asks the guard to close the connection if this stream is still open at `at` plus the
    /// grace: hyper stops polling a body whose client stopped reading, so the stream could not
    /// end by itself. The earliest time asked wins; a no-op without a guard.
    pub(crate) fn end_by(&self, at: Instant) {
        let Some(guarded) = &self.state.guarded else {
            return;
        };
        let Some(at) = at.checked_add(guarded.grace) else {
            return;
        };
        let mut deadline = lock(&guarded.deadline);
        if deadline.as_ref().is_some_and(|entry| entry.at() <= at) || self.is_over() {
            return;
        }
        *deadline = Some(guarded.handle.deadline(at));
    }

    /// Records why the response ended (the reason decided before, if any) and wakes the
    /// waiters; returns the reason to report, or `None` if it had already ended.
    pub(crate) fn close(&self, reason: CloseReason) -> Option<CloseReason> {
        let mut ending = lock(&self.state.ending);
        if ending.over.is_some() {
            return None;
        }
        let reason = *ending.decided.get_or_insert(reason);
        ending.over = Some(reason);
        let linked = ending.take_linked();
        drop(ending);
        tell(linked, reason);
        if let Some(guarded) = &self.state.guarded {
            lock(&guarded.deadline).take();
        }
        self.state.closed.notify_waiters();
        Some(reason)
    }

    fn is_over(&self) -> bool {
        self.close_reason().is_some()
    }

    /// Waits until the response is over and says why. Returns at once if it already is.
    pub async fn closed(&self) -> CloseReason {
        loop {
            // Registered before the check, so a report between the two still wakes it.
            let notified = self.state.closed.notified();
            if let Some(reason) = self.close_reason() {
                return reason;
            }
            notified.await;
        }
    }

    /// Why the response ended, or `None` while it is still going.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.state.ending).over
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every update is a
/// single assignment or take).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseConnection")
            .field("close_reason", &self.close_reason())
            .field("guarded", &self.state.guarded.is_some())
            .finish()
    }
}

/// What the `on_close` hook of [`SseLayer`](crate::SseLayer) learns about a finished response,
/// for logs and metrics.
///
/// ```
/// use tower_sse::{CloseInfo, CloseReason, SseLayer};
///
/// let layer = SseLayer::new().on_close(|info: CloseInfo| {
///     if info.streaming && info.reason != CloseReason::Completed {
///         eprintln!("stream cut after {:?}: {} ({} events)", info.duration, info.reason, info.events);
///     }
/// });
/// # drop(layer);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseInfo {
    /// Why the response ended; the same reason [`SseConnection::closed`] returns. For a
    /// response that is not an event stream, `Completed` means its body was written to the
    /// end, whatever its status.
    pub reason: CloseReason,
    /// How long the response lasted, from the request reaching the layer to the end.
    pub duration: Duration,
    /// How many items were written, counted as the framing delimits them: for an event
    /// stream, events (blocks of lines ended by a blank line, the final event included,
    /// keep-alives not); for NDJSON, JSON Lines and JSON text sequences, lines; for text,
    /// frames. Always 0 for responses that are not streams the layer manages.
    pub events: u64,
    /// How many body bytes were written, keep-alives and final events included.
    pub bytes: u64,
    /// The response's status, or `None` when the service failed or the request was dropped
    /// before there was a response.
    pub status: Option<StatusCode>,
    /// Whether the response was a stream that the layer managed (an event stream, or a stream
    /// of another [framing](crate::framing): limits, shutdown, keep-alives where allowed);
    /// `false` for every other response, a `content-encoding` one included.
    pub streaming: bool,
}
