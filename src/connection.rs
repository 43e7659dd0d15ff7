//! [`SseConnection`]: the handle [`SseLayer`](crate::SseLayer) puts into every request, which
//! tells the application when and why the response stream ended, and [`CloseInfo`], the summary
//! its `on_close` hook receives.

use std::{
    fmt,
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::sync::Notify;

use crate::CloseReason;

/// A handle on one response, found in the request extensions of every request that passed
/// through [`SseLayer`](crate::SseLayer).
///
/// Producers that generate events for a client await [`closed`](SseConnection::closed) to stop
/// as soon as the response is over, whether it completed, the client went away, it failed, the
/// server is shutting down or a time limit passed. With the `axum` feature it is also an
/// extractor.
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

/// What the clones of a handle share: the reason, set once, and the waiters to wake.
#[derive(Debug, Default)]
struct ConnectionState {
    reason: OnceLock<CloseReason>,
    closed: Notify,
}

impl SseConnection {
    /// A handle on a response that has not ended yet.
    pub(crate) fn new() -> Self {
        SseConnection {
            state: Arc::default(),
        }
    }

    /// Records why the response ended and wakes the waiters; returns `false`, changing
    /// nothing, if it had already ended.
    pub(crate) fn close(&self, reason: CloseReason) -> bool {
        let first = self.state.reason.set(reason).is_ok();
        if first {
            self.state.closed.notify_waiters();
        }
        first
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

impl fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseConnection")
            .field("close_reason", &self.close_reason())
            .finish()
    }
}

/// What the `on_close` hook of [`SseLayer`](crate::SseLayer) learns about a finished response,
/// for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseInfo {
    /// Why the response ended; the same reason [`SseConnection::closed`] returns.
    pub reason: CloseReason,
    /// How long the response lasted, from the request reaching the layer to the end.
    pub duration: Duration,
    /// How many events were written: blocks of lines ended by a blank line, the final event
    /// included, keep-alives not. Always 0 for responses that are not event streams.
    pub events: u64,
    /// How many body bytes were written, keep-alives and final events included.
    pub bytes: u64,
}
