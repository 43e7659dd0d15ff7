//! [`SseLayer`]: the tower middleware that makes event streams safe to serve: keep-alives between
//! events, disconnect detection, the right headers, a time limit and graceful shutdown.
//!
//! Laid out like the tower-http middlewares: the layer and its options here, the service and
//! its response future in `service`, the response body in `body`, and the event-boundary
//! scanner the body relies on in `scan`.

mod body;
mod clock;
mod scan;
mod service;
mod track;

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::future::{FutureExt, Shared};
use tokio_util::sync::CancellationToken;
use tower::Layer;

pub use body::ResponseBody;
pub use service::{ResponseFuture, SseService};

use crate::{CloseInfo, Event};
use clock::Clock;

/// The default keep-alive interval.
const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a stream that must end may take to do so, by default.
const DEFAULT_FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The hook called once per request when its response is over.
type OnClose = Arc<dyn Fn(CloseInfo) + Send + Sync>;

/// A shutdown signal that every open stream can wait on.
type Signal = Shared<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// A [`tower::Layer`] for servers that stream Server-Sent Events.
///
/// It puts an [`SseConnection`](crate::SseConnection) handle into every request, and on every
/// response whose content type is `text/event-stream` (any case, parameters allowed), whatever
/// its body type:
///
/// * writes a keep-alive after the stream has been silent for an interval (15 s by default),
///   only ever between events, so that proxies and clients do not time the stream out;
/// * removes `content-length` and adds `cache-control: no-cache` and `x-accel-buffering: no`
///   when missing, so that caches and proxies do not hold the stream back;
/// * optionally ends the stream after a maximum duration or when the server shuts down, each
///   time at an event boundary and after an optional final event, so clients reconnect cleanly
///   and servers stop without waiting on streams that never end.
///
/// Streams of the other [framings](crate::framing) (`application/x-ndjson`,
/// `application/jsonl`, `application/json-seq`, and `text/plain` without a known length) get
/// the same headers, disconnect detection, time limit and graceful shutdown, each ending after
/// the item in flight (a line, or for text any frame); nothing of the layer's own goes into
/// them: no keep-alive, comment or final event.
///
/// Every other response passes through unchanged (an event stream with a `content-encoding`
/// included: compressed bytes have no boundaries to find); its handle still reports how it
/// ended, and `on_close` says what it was ([`CloseInfo::status`](crate::CloseInfo::status),
/// [`CloseInfo::streaming`](crate::CloseInfo::streaming)).
///
/// # Limits and clients that stop reading
///
/// The layer acts when hyper polls the body, and hyper stops polling it once the client stops
/// reading: on HTTP/1.1 when the socket's buffers are full, on HTTP/2 when the stream's or the
/// connection's flow-control window is spent (the socket may stay healthy). What each limit
/// guarantees:
///
/// | limit | client reading | client stopped reading |
/// | --- | --- | --- |
/// | `max_duration` | ends at the next boundary, final event, clean end | on a guarded connection (a [`StallGuard`](crate::StallGuard) handle in the request): the connection is closed `max_duration` + [`finish_timeout`](Self::finish_timeout) after the request, over HTTP/1.1 and HTTP/2 (every stream of that HTTP/2 connection goes with it), reason `Stalled`; unguarded: no bound |
/// | channel timeout | ends with its timeout event | as `max_duration`, for a channel linked to the request ([`SseConnection::link`](crate::SseConnection::link)) |
/// | graceful shutdown | ends at the next boundary, shutdown event, clean end | [`Shutdown`](crate::Shutdown) closes every guarded connection still open after its grace; without it, no bound |
/// | [`finish_timeout`](Self::finish_timeout) | a stream whose inner body stalls mid-event after the decision to end is aborted (HTTP/1.1: connection closed; HTTP/2: stream reset) | see the rows above |
/// | inner body error | reported `Error` at once, aborted 20 ms later (HTTP/1.1: connection closed; HTTP/2: stream reset), so that the connection writes the events before it first | reported `Error` at once; the abort goes out when hyper next polls the body, which the rows above bound; what the client did not read is lost |
/// | guard write timeout | never fires while writes progress | HTTP/1.1 and a full HTTP/2 socket: closed after the write timeout; an HTTP/2 flow-control stall does not fill the socket, so only the rows above apply |
///
/// A hub subscriber that lags is told (`LagPolicy`) when its body is next polled; one that is
/// never polled holds only its place in the topic's bounded log, and its stream ends by the rows
/// above.
///
/// ```
/// use std::time::Duration;
/// use tokio_util::sync::CancellationToken;
/// use tower_sse::{Event, SseLayer};
///
/// let shutdown = CancellationToken::new();
/// let layer = SseLayer::new()
///     .keep_alive(Duration::from_secs(10))
///     .max_duration(Duration::from_secs(600))
///     .max_duration_event(Event::new().retry(Duration::from_secs(1)))
///     .graceful_shutdown(shutdown.clone())
///     .shutdown_event(Event::new().event("shutdown")?.data("server restarting"))
///     .on_close(|info| println!("{} after {:?}", info.reason, info.duration));
/// // `Router::new().route(..).layer(layer)` in axum, or `ServiceBuilder::new().layer(layer)`.
/// # Ok::<(), tower_sse::EventError>(())
/// ```
#[derive(Clone)]
pub struct SseLayer {
    config: Arc<Config>,
}

/// The options of an [`SseLayer`], shared by its services and their bodies.
#[derive(Clone)]
pub(crate) struct Config {
    keep_alive: Option<Duration>,
    keep_alive_bytes: Bytes,
    open_comment: Option<Bytes>,
    max_duration: Option<Duration>,
    max_duration_event: Option<Bytes>,
    shutdown: Option<Signal>,
    /// The token behind `shutdown`, when it is one: checked without a lock.
    shutdown_token: Option<CancellationToken>,
    shutdown_event: Option<Bytes>,
    finish_timeout: Duration,
    on_close: Option<OnClose>,
    /// The timer of every stream's deadlines.
    clock: Arc<Clock>,
}

impl SseLayer {
    /// A layer with keep-alives every 15 s of silence, written as the comment line `:\n`, and no
    /// open comment, time limit, shutdown signal or close hook.
    pub fn new() -> Self {
        SseLayer {
            config: Arc::new(Config {
                keep_alive: Some(DEFAULT_KEEP_ALIVE),
                keep_alive_bytes: comment_lines(""),
                open_comment: None,
                max_duration: None,
                max_duration_event: None,
                shutdown: None,
                shutdown_token: None,
                shutdown_event: None,
                finish_timeout: DEFAULT_FINISH_TIMEOUT,
                on_close: None,
                clock: Arc::default(),
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Writes a keep-alive after `interval` of silence; the wait starts over after every write.
    ///
    /// A zero interval turns keep-alives off, like [`without_keep_alive`](Self::without_keep_alive).
    ///
    /// The streams of one layer share one timer: a keep-alive falls due on a grid common to
    /// all of them (up to a sixteenth of the interval, and at most a second, early), and one
    /// task, spawned on the runtime while any stream waits and gone once none does, wakes each
    /// batch. An idle stream holds its deadline, not a timer of its own.
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.config().keep_alive = (!interval.is_zero()).then_some(interval);
        self
    }

    /// Writes no keep-alives.
    pub fn without_keep_alive(mut self) -> Self {
        self.config().keep_alive = None;
        self
    }

    /// Writes keep-alives as comment lines holding `text` (`: text\n`, one line per line of
    /// text), with no blank line after them: clients ignore them and dispatch nothing.
    ///
    /// The default is the empty comment `:\n`. A blank line after it (`:\n\n`) would make some
    /// clients, such as `@microsoft/fetch-event-source`, report an empty message.
    pub fn keep_alive_comment(mut self, text: impl AsRef<str>) -> Self {
        self.config().keep_alive_bytes = comment_lines(text.as_ref());
        self
    }

    /// Writes keep-alives as this event instead of a comment, for `EventSource` users who want
    /// to see them (with an event type such as `ping`, a listener receives each one).
    pub fn keep_alive_event(mut self, event: Event) -> Self {
        self.config().keep_alive_bytes = event.to_bytes();
        self
    }

    /// Writes a comment line holding `text` as soon as the body is first polled, before any
    /// event: it pushes the response headers through proxies that hold them until the first
    /// data arrives (some HTTP/2 proxies do). Off by default.
    pub fn open_comment(mut self, text: impl AsRef<str>) -> Self {
        self.config().open_comment = Some(comment_lines(text.as_ref()));
        self
    }

    /// Calls `hook` once per request when its response is over, with the reason, the duration
    /// and how many events and bytes were written: for logs and metrics.
    ///
    /// It runs on the task that ends the response (often while the response is dropped), so it
    /// should be quick and must not block.
    pub fn on_close<F>(mut self, hook: F) -> Self
    where
        F: Fn(CloseInfo) + Send + Sync + 'static,
    {
        self.config().on_close = Some(Arc::new(hook));
        self
    }

    /// Ends every event stream cleanly once `limit` has passed since its request reached the
    /// layer, at the next event boundary: clients reconnect (resuming with `Last-Event-ID`) instead of
    /// holding one response forever. The reason reported is
    /// [`CloseReason::TimedOut`](crate::CloseReason::TimedOut).
    pub fn max_duration(mut self, limit: Duration) -> Self {
        self.config().max_duration = Some(limit);
        self
    }

    /// Writes this event last when a stream reaches its [`max_duration`](Self::max_duration),
    /// typically one with a `retry:` hint so that clients come back at the pace you choose.
    pub fn max_duration_event(mut self, event: Event) -> Self {
        self.config().max_duration_event = Some(event.to_bytes());
        self
    }

    /// Ends every event stream cleanly once `token` is cancelled: each open stream finishes the
    /// event in flight, writes the [`shutdown_event`](Self::shutdown_event) if one is set, and
    /// ends. The reason reported is [`CloseReason::Shutdown`](crate::CloseReason::Shutdown).
    ///
    /// Cancel the same token that stops the server (for example through
    /// `axum::serve(..).with_graceful_shutdown(token.cancelled_owned())`), so that the server's
    /// graceful shutdown completes instead of waiting on streams that never end. Streams whose
    /// client stopped reading are not polled and cannot end this way: [`Shutdown`] gives the
    /// token, and closes the connections still open after a grace.
    ///
    /// [`Shutdown`]: crate::Shutdown
    pub fn graceful_shutdown(self, token: CancellationToken) -> Self {
        let mut layer = self.graceful_shutdown_on(token.clone().cancelled_owned());
        layer.config().shutdown_token = Some(token);
        layer
    }

    /// Like [`graceful_shutdown`](Self::graceful_shutdown), with any future as the signal: the
    /// streams end when it completes.
    pub fn graceful_shutdown_on<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let signal: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(signal);
        self.config().shutdown = Some(signal.shared());
        self.config().shutdown_token = None;
        self
    }

    /// Writes this event last when a stream ends for a graceful shutdown, for example one that
    /// tells the client when to reconnect.
    pub fn shutdown_event(mut self, event: Event) -> Self {
        self.config().shutdown_event = Some(event.to_bytes());
        self
    }

    /// How long a stream that must end (its `max_duration` passed, or the server is shutting
    /// down) may take to get there; 5 s by default.
    ///
    /// * If the inner body stops in the middle of an event (a proxied upstream that stalls),
    ///   the stream is aborted this long after the decision, since the event cannot be
    ///   completed: HTTP/1.1 closes the connection, HTTP/2 resets the stream.
    /// * If hyper stops polling the stream because the client stopped reading, the layer
    ///   cannot act; on a connection guarded by a [`StallGuard`](crate::StallGuard) whose
    ///   handle is in the request, the guard closes the connection once `max_duration` (or a
    ///   linked channel's timeout) plus this grace has passed.
    pub fn finish_timeout(mut self, grace: Duration) -> Self {
        self.config().finish_timeout = grace;
        self
    }
}

impl Default for SseLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for SseLayer {
    type Service = SseService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SseService::new(inner, self.config.clone())
    }
}

impl fmt::Debug for SseLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("keep_alive", &self.keep_alive)
            .field("keep_alive_bytes", &self.keep_alive_bytes)
            .field("open_comment", &self.open_comment)
            .field("max_duration", &self.max_duration)
            .field("max_duration_event", &self.max_duration_event)
            .field("graceful_shutdown", &self.shutdown.is_some())
            .field("shutdown_event", &self.shutdown_event)
            .field("finish_timeout", &self.finish_timeout)
            .field("on_close", &self.on_close.is_some())
            .finish()
    }
}

/// `text` as comment lines without the blank line an event ends with: they keep a stream that
/// is between events between events.
fn comment_lines(text: &str) -> Bytes {
    let event = Event::new().comment(text).to_bytes();
    event.slice(..event.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::comment_lines;

    #[test]
    fn comment_lines_have_no_blank_line() {
        assert_eq!(&comment_lines("")[..], b":\n");
        assert_eq!(&comment_lines("ping")[..], b": ping\n");
        assert_eq!(&comment_lines("a\nb")[..], b": a\n: b\n");
    }
}
