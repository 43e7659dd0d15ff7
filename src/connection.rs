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
    sync::{Arc, Mutex, OnceLock},
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

/// A linked channel's way to stop taking events, with the reason.
type Closer = Box<dyn Fn(CloseReason) + Send + Sync>;

/// What the clones of a handle share.
struct ConnectionState {
    /// Why the response ended, set once it is over.
    reason: OnceLock<CloseReason>,
    /// Why the response is ending, set as soon as the layer (or a linked channel) decides it:
    /// the reason every party reports.
    decided: OnceLock<CloseReason>,
    closed: Notify,
    /// Linked channels, told once the ending is decided.
    linked: Mutex<Vec<Closer>>,
    /// The guarded connection the request arrived on, if any.
    guard: Option<ConnectionHandle>,
    /// How long a stream that must end may take to do so before its connection is closed.
    grace: Duration,
    /// The latest moment this stream may still be open, registered with the guard.
    deadline: Mutex<Option<DeadlineEntry>>,
}

impl SseConnection {
    /// A handle on a response that has not ended yet, on `guard`'s connection if it has one.
    pub(crate) fn new(guard: Option<ConnectionHandle>, grace: Duration) -> Self {
        SseConnection {
            state: Arc::new(ConnectionState {
                reason: OnceLock::new(),
                decided: OnceLock::new(),
                closed: Notify::new(),
                linked: Mutex::new(Vec::new()),
                guard,
                grace,
                deadline: Mutex::new(None),
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
        let closer: Closer = Box::new(emitter.closer());
        let mut linked = lock(&self.state.linked);
        match self.state.decided.get() {
            Some(&reason) => {
                drop(linked);
                closer(reason);
            }
            None => linked.push(closer),
        }
    }

    /// Decides why the stream ends, unless that was decided already, and tells the linked
    /// channels; returns the reason decided.
    pub(crate) fn decide(&self, reason: CloseReason) -> CloseReason {
        let reason = *self.state.decided.get_or_init(|| reason);
        let linked = std::mem::take(&mut *lock(&self.state.linked));
        for closer in linked {
            closer(reason);
        }
        reason
    }

    /// Why the guard closed the connection under this response, if it did.
    pub(crate) fn guard_reason(&self) -> Option<CloseReason> {
        self.state.guard.as_ref()?.close_reason()
    }

    /// Asks the guard to close the connection if this stream is still open at `at` plus the
    /// grace: hyper stops polling a body whose client stopped reading, so the stream could not
    /// end by itself. The earliest time asked wins; a no-op without a guard.
    pub(crate) fn end_by(&self, at: Instant) {
        let Some(guard) = &self.state.guard else {
            return;
        };
        let Some(at) = at.checked_add(self.state.grace) else {
            return;
        };
        let mut deadline = lock(&self.state.deadline);
        if deadline.as_ref().is_some_and(|entry| entry.at() <= at) || self.is_over() {
            return;
        }
        *deadline = Some(guard.deadline(at));
    }

    /// Records why the response ended (the reason decided before, if any) and wakes the
    /// waiters; returns the reason to report, or `None` if it had already ended.
    pub(crate) fn close(&self, reason: CloseReason) -> Option<CloseReason> {
        let reason = self.decide(reason);
        if self.state.reason.set(reason).is_err() {
            return None;
        }
        lock(&self.state.deadline).take();
        self.state.closed.notify_waiters();
        Some(reason)
    }

    fn is_over(&self) -> bool {
        self.state.reason.get().is_some()
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
        self.state.reason.get().copied()
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
            .field("guarded", &self.state.guard.is_some())
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
    /// How many events were written: blocks of lines ended by a blank line, the final event
    /// included, keep-alives not. Always 0 for responses that are not event streams.
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
