//! [`CloseReason`]: why an event stream ended, as every stage of the pipeline reports it.

use std::fmt;

/// Why an event stream is over.
///
/// Reported by [`SseEmitter::closed`](crate::SseEmitter::closed) to the producer, by
/// [`SseConnection::closed`](crate::SseConnection::closed) to whoever holds the request and by
/// the `on_close` hook of [`SseLayer`](crate::SseLayer): a channel linked to its request's
/// connection (see [`SseConnection::link`](crate::SseConnection::link)) reports the same reason
/// as the layer.
///
/// ```
/// use tower_sse::CloseReason;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (emitter, body) = tower_sse::channel(4);
/// drop(body); // the client went away
/// match emitter.closed().await {
///     CloseReason::Disconnected => {} // stop producing: nobody reads
///     other => panic!("{other}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The stream ended cleanly: everything was written and the response finished.
    Completed,
    /// The response was dropped before its end: the client went away.
    Disconnected,
    /// The stream ended with an error (from the producer, the body or the service).
    Error,
    /// The server is shutting down and ended the stream cleanly.
    Shutdown,
    /// A time limit on the stream passed and it was ended cleanly.
    TimedOut,
    /// The client stopped reading: its connection made no progress writing for the
    /// [`StallGuard`](crate::StallGuard)'s write timeout, or a stream that had to end could not
    /// be written to its end in time, so the guard closed the connection.
    Stalled,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Completed => "the stream completed",
            CloseReason::Disconnected => "the client disconnected",
            CloseReason::Error => "the stream ended with an error",
            CloseReason::Shutdown => "the server is shutting down",
            CloseReason::TimedOut => "the stream timed out",
            CloseReason::Stalled => "the client stopped reading",
        })
    }
}
