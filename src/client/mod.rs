//! A client for event streams: any method, headers and body, over any tower service, with
//! reconnection done right (feature `client`).
//!
//! [`EventSource`] is what `@microsoft/fetch-event-source` is to a browser's `EventSource`,
//! without its pitfalls:
//!
//! * the response is checked first: `204 No Content` ends the stream, any other non-`2xx`
//!   status or a content type other than `text/event-stream` is a typed [`ClientError`] with
//!   the status, the content type and the start of the body;
//! * events are decoded by the crate's spec-exact [`Parser`](crate::Parser), in time linear in
//!   the bytes however long the lines, and an event cut short by the connection is dropped;
//! * a dropped or failed connection is reconnected with the server's `retry:` delay, capped
//!   exponential backoff and jitter, and `Last-Event-ID`; but a request with a body or a
//!   non-idempotent method (a `POST` that starts a generation) is never sent twice unless
//!   [`Reconnect::Always`] says so, and a `4xx` is never retried;
//! * an idle timeout (no bytes at all, keep-alive comments included, for a while), a maximum
//!   event size, and dropping the stream cancels the request at once.
//!
//! It runs over any tower [`Service`] taking an `http::Request` (with any body type that can
//! be made from `Bytes`) and returning an `http::Response` with an `http_body::Body`
//! (hyper-util's client, a tower stack with timeouts, an in-process router in tests), and
//! [`EventSource::new`] uses
//! [`HttpClient`], hyper-util's client over plain HTTP. TLS is not built in: for `https://`, pass
//! a client with a TLS connector to [`EventSource::with_service`].
//!
//! ```no_run
//! use futures::StreamExt;
//! use http::Request;
//! use tower_sse::client::EventSource;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let request = Request::post("http://127.0.0.1:8080/gpt-stream")
//!     .header("content-type", "application/json")
//!     .body(r#"{"query": "Hello"}"#)?;
//! let mut messages = EventSource::new(request).stream().messages();
//! while let Some(message) = messages.next().await {
//!     print!("{}", message?.data);
//! }
//! # Ok(())
//! # }
//! ```

mod backoff;
mod error;
mod http;
mod open;
mod request;
mod stream;

use std::time::Duration;

use ::http::{Request, Response, Uri};
use bytes::Bytes;
use http_body::Body;
use tower::Service;

use crate::BoxError;

pub use self::http::{http_client, HttpClient};
pub use error::ClientError;
pub use open::ERROR_BODY_PREFIX;
pub use request::Reconnect;
pub use stream::{ClientEvent, EventStream, Messages};

/// The first reconnection delay when the server sent no `retry:`: 1 s.
const DEFAULT_INITIAL_DELAY: Duration = Duration::from_secs(1);

/// The longest reconnection delay backoff grows to (a server's `retry:` may ask for more): 30 s.
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

/// The default maximum event size: 8 MiB.
const DEFAULT_MAX_EVENT_SIZE: usize = 8 * 1024 * 1024;

/// A configured event stream request; [`stream`](EventSource::stream) opens it.
///
/// Defaults: reconnect only idempotent requests without a body ([`Reconnect::IfIdempotent`]),
/// forever, waiting the server's `retry:` or 1 s, doubling on every failure in a row up to
/// 30 s, plus up to a quarter of jitter; no idle timeout; events up to 8 MiB.
///
/// Over any tower service, here an in-process one:
///
/// ```
/// use bytes::Bytes;
/// use futures::StreamExt;
/// use http::Request;
/// use http_body_util::Full;
/// use tower_sse::client::EventSource;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::BoxError> {
/// let server = tower::service_fn(|_: Request<Bytes>| async {
///     let events = Full::new(Bytes::from_static(b"data: one\n\nid: 2\ndata: two\n\n"));
///     Ok::<_, std::convert::Infallible>(tower_sse::response(events))
/// });
/// let request = Request::get("http://in.process/events").body(Bytes::new())?;
/// let mut messages = EventSource::with_service(server, request).stream().messages();
/// assert_eq!(messages.next().await.unwrap()?.data, "one");
/// let two = messages.next().await.unwrap()?;
/// assert_eq!((two.data.as_str(), two.last_event_id.as_str()), ("two", "2"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EventSource<S = HttpClient> {
    service: S,
    request: request::Template,
    settings: stream::Settings,
}

impl EventSource<HttpClient> {
    /// An event stream over a new [`HttpClient`]: `request` may have any method, headers and
    /// body (an `Accept: text/event-stream` header is added unless it has one). Its URI must be
    /// absolute and `http://`.
    pub fn new(request: Request<impl Into<Bytes>>) -> EventSource<HttpClient> {
        let mut source = EventSource::with_service(http_client(), request);
        // Any other URI is a final ClientError::UnsupportedUri, not a connection retried.
        source.settings.plain_http_only = true;
        source
    }

    /// `GET uri` over a new [`HttpClient`].
    pub fn get(uri: Uri) -> EventSource<HttpClient> {
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = uri;
        EventSource::new(request)
    }
}

impl<S> EventSource<S> {
    /// An event stream over any tower service, such as a shared [`HttpClient`] or a client
    /// with TLS, timeouts or retries of its own.
    pub fn with_service(service: S, request: Request<impl Into<Bytes>>) -> EventSource<S> {
        EventSource {
            service,
            request: request::Template::new(request.map(Into::into)),
            settings: stream::Settings {
                reconnect: Reconnect::default(),
                backoff: backoff::Backoff::new(DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY),
                max_retries: None,
                idle_timeout: None,
                max_event_size: DEFAULT_MAX_EVENT_SIZE,
                last_event_id: String::new(),
                plain_http_only: false,
            },
        }
    }

    /// When the request may be sent again (default [`Reconnect::IfIdempotent`]).
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.settings.reconnect = policy;
        self
    }

    /// The first reconnection delay when the server sent no `retry:`, and the longest delay the
    /// backoff grows to (a server's `retry:` longer than `max` is still honoured).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.settings.backoff.initial = initial;
        self.settings.backoff.max = max;
        self
    }

    /// How many reconnections in a row (with no event in between) the stream makes before it
    /// yields the last error and ends (default: no limit).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.settings.max_retries = Some(retries);
        self
    }

    /// Treats a connection on which no byte arrives for `timeout` (keep-alive comments count)
    /// as failed, waiting for the response head included: it reconnects, or ends with
    /// [`ClientError::IdleTimeout`].
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.idle_timeout = Some(timeout);
        self
    }

    /// The most bytes an event (its data, type and id, and its longest line) may take: a
    /// larger one ends the stream with [`ClientError::EventTooLarge`] (default 8 MiB).
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.settings.max_event_size = bytes;
        self
    }

    /// Sends `Last-Event-ID: id` from the first request on, to resume a stream read before;
    /// once the server sends ids, the latest is sent instead.
    pub fn last_event_id(mut self, id: impl Into<String>) -> Self {
        self.settings.last_event_id = id.into();
        self
    }

    /// Opens the stream: nothing is sent before the stream is first polled.
    ///
    /// `Q` is the service's request body type, made from the request's bytes for every
    /// request; it is inferred for a service that takes one body type (such as
    /// [`HttpClient`]), and named for one that takes any (`.stream::<axum::body::Body, _>()`
    /// for an axum `Router`).
    pub fn stream<Q, B>(self) -> EventStream
    where
        S: Service<Request<Q>, Response = Response<B>> + Send + 'static,
        Q: From<Bytes> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Error: Into<BoxError>,
    {
        stream::start(self.service, self.request, self.settings)
    }
}
