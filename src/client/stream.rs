//! [`EventStream`]: the events of one logical stream across reconnections, and the state
//! machine behind it.

use std::{
    fmt,
    future::{poll_fn, Future},
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use futures::{stream, Stream, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use tower::Service;

use super::{
    backoff::Backoff,
    open::{self, Verdict},
    request::{Reconnect, Template},
    ClientError,
};
use crate::{BoxError, MessageEvent, Parser};

/// One item of an [`EventStream`]: an event, or news about the connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A response was accepted as an event stream (`onopen`): its status and headers. Comes
    /// first, and again after every reconnection.
    Open {
        /// The response status (a `2xx` other than `204`).
        status: StatusCode,
        /// The response headers.
        headers: HeaderMap,
    },
    /// An event, as a browser's `EventSource` dispatches it.
    Message(MessageEvent),
    /// The connection failed or ended and the stream reconnects after `delay`.
    Reconnecting {
        /// How many reconnections in a row this is (1 for the first since events last
        /// arrived).
        attempt: u32,
        /// How long the stream waits before sending the request again.
        delay: Duration,
        /// Why: `None` when the server ended the response cleanly.
        error: Option<ClientError>,
    },
}

/// The events of an [`EventSource`](super::EventSource): a `Stream` of [`ClientEvent`]s that
/// reconnects as its source was configured to, and ends after `204 No Content`, after a clean
/// end it may not reconnect from, or right after yielding an error.
///
/// Dropping it cancels the request in flight at once (its connection is closed).
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = Result<ClientEvent, ClientError>> + Send>>,
}

impl EventStream {
    /// Only the messages: open and reconnection notices are skipped.
    pub fn messages(self) -> Messages {
        Messages { inner: self }
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Result<ClientEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The messages of an [`EventStream`], from [`EventStream::messages`].
#[derive(Debug)]
pub struct Messages {
    inner: EventStream,
}

impl Stream for Messages {
    type Item = Result<MessageEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match futures::ready!(self.inner.poll_next_unpin(cx)) {
                Some(Ok(ClientEvent::Message(event))) => Poll::Ready(Some(Ok(event))),
                Some(Ok(_)) => continue,
                Some(Err(error)) => Poll::Ready(Some(Err(error))),
                None => Poll::Ready(None),
            };
        }
    }
}

/// The settings of a stream, from the [`EventSource`](super::EventSource) builder.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) reconnect: Reconnect,
    pub(crate) backoff: Backoff,
    pub(crate) max_retries: Option<u32>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_event_size: usize,
    pub(crate) last_event_id: String,
    /// The service is the built-in [`HttpClient`](super::HttpClient): refuse URIs it cannot
    /// send to, rather than retry them as connection failures.
    pub(crate) plain_http_only: bool,
}

/// Where the connection stands.
enum Phase<B> {
    /// Send the request.
    Connect,
    /// Read the body.
    Reading(Pin<Box<B>>),
    /// The body ended cleanly.
    Ended,
    /// The connection failed: reconnect, or yield the error.
    Failed(ClientError),
    /// Wait before reconnecting.
    Waiting(Duration),
    /// Nothing more.
    Done,
}

/// The state of one logical stream; it lives inside the [`EventStream`], so dropping the
/// stream drops the request or body in flight.
struct Source<S, Q, B> {
    service: S,
    /// The service's request body type, made from the kept bytes for every request.
    request_body: PhantomData<fn() -> Q>,
    request: Template,
    may_resend: bool,
    settings: Settings,
    parser: Parser,
    /// Reconnections since events last arrived.
    failures: u32,
    phase: Phase<B>,
}

pub(crate) fn start<S, Q, B>(service: S, request: Template, settings: Settings) -> EventStream
where
    S: Service<Request<Q>, Response = Response<B>> + Send + 'static,
    Q: From<Bytes> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    let source = Source {
        service,
        request_body: PhantomData,
        may_resend: request.may_resend(settings.reconnect),
        request,
        parser: Parser::with_max_buffer(settings.max_event_size),
        settings,
        failures: 0,
        phase: Phase::Connect,
    };
    // Boxed, so that each turn moves a pointer rather than the whole state.
    let inner = stream::unfold(Box::new(source), |mut source| async move {
        let item = source.next().await?;
        Some((item, source))
    });
    EventStream {
        inner: Box::pin(inner),
    }
}

impl<S, Q, B> Source<S, Q, B>
where
    S: Service<Request<Q>, Response = Response<B>> + Send,
    Q: From<Bytes> + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body + Send,
    B::Error: Into<BoxError>,
{
    async fn next(&mut self) -> Option<Result<ClientEvent, ClientError>> {
        loop {
            // Events parsed before a failure are delivered before it.
            if let Some(event) = self.parser.next_event() {
                self.failures = 0;
                // From now on the stream resumes from what the server sent.
                self.settings.last_event_id.clear();
                return Some(Ok(ClientEvent::Message(event)));
            }
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::Waiting(delay) => {
                    tokio::time::sleep(delay).await;
                    self.phase = Phase::Connect;
                }
                Phase::Connect => match self.open().await {
                    Ok(Verdict::Stream(parts, body)) => {
                        self.phase = Phase::Reading(Box::pin(body));
                        return Some(Ok(ClientEvent::Open {
                            status: parts.status,
                            headers: parts.headers,
                        }));
                    }
                    Ok(Verdict::Stop) => return None,
                    Err(error) => self.phase = Phase::Failed(error),
                },
                Phase::Reading(mut body) => {
                    self.phase = match self.read(&mut body).await {
                        Ok(true) => Phase::Reading(body),
                        Ok(false) => Phase::Ended,
                        Err(error) => Phase::Failed(error),
                    };
                    if !matches!(self.phase, Phase::Reading(_)) {
                        // An event the connection cut short is dropped, as a browser drops it.
                        self.parser.finish();
                    }
                }
                Phase::Ended if self.may_reconnect() => return Some(Ok(self.schedule(None))),
                Phase::Ended => return None,
                Phase::Failed(error) if error.is_retryable() && self.may_reconnect() => {
                    return Some(Ok(self.schedule(Some(error))))
                }
                Phase::Failed(error) => return Some(Err(error)),
            }
        }
    }

    /// Whether the request may be sent again, with retries left.
    fn may_reconnect(&self) -> bool {
        self.may_resend
            && self
                .settings
                .max_retries
                .is_none_or(|max| self.failures < max)
    }

    /// Schedules the next reconnection and returns its notice.
    fn schedule(&mut self, error: Option<ClientError>) -> ClientEvent {
        self.failures = self.failures.saturating_add(1);
        let delay = self
            .settings
            .backoff
            .delay(self.failures, self.parser.retry());
        self.phase = Phase::Waiting(delay);
        ClientEvent::Reconnecting {
            attempt: self.failures,
            delay,
            error,
        }
    }

    /// Sends the request and checks the response head.
    async fn open(&mut self) -> Result<Verdict<B>, ClientError> {
        if self.settings.plain_http_only && !self.request.is_absolute_http() {
            return Err(ClientError::UnsupportedUri(self.request.uri().clone()));
        }
        let id = match self.parser.last_event_id() {
            "" => &self.settings.last_event_id,
            id => id,
        };
        let request = self.request.build(id)?;
        let service = &mut self.service;
        let response = within(self.settings.idle_timeout, async move {
            poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(|error| ClientError::Transport(error.into()))?;
            service
                .call(request)
                .await
                .map_err(|error| ClientError::Transport(error.into()))
        })
        .await??;
        let (parts, body) = response.into_parts();
        open::check(parts, body).await
    }

    /// Reads one frame of the body into the parser: `false` at the clean end of the body.
    async fn read(&mut self, body: &mut Pin<Box<B>>) -> Result<bool, ClientError> {
        let frame = within(
            self.settings.idle_timeout,
            poll_fn(|cx| body.as_mut().poll_frame(cx)),
        )
        .await?;
        let Some(frame) = frame else {
            return Ok(false);
        };
        let frame = frame.map_err(|error| ClientError::Transport(error.into()))?;
        if let Ok(mut data) = frame.into_data() {
            while data.has_remaining() {
                let chunk = data.chunk();
                let len = chunk.len();
                self.parser
                    .feed(chunk)
                    .map_err(|_| ClientError::EventTooLarge(self.settings.max_event_size))?;
                data.advance(len);
            }
        }
        Ok(true)
    }
}

/// Runs `future`, failing with [`ClientError::IdleTimeout`] if `limit` passes first.
async fn within<F: Future>(limit: Option<Duration>, future: F) -> Result<F::Output, ClientError> {
    match limit {
        None => Ok(future.await),
        Some(limit) => tokio::time::timeout(limit, future)
            .await
            .map_err(|_| ClientError::IdleTimeout(limit)),
    }
}
