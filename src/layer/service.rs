//! [`SseService`], the service [`SseLayer`](super::SseLayer) wraps around an inner one, and its
//! [`ResponseFuture`].

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{
    header::{self, HeaderName, HeaderValue},
    HeaderMap, Request, Response,
};
use pin_project_lite::pin_project;
use tower::Service;

use super::{body::ResponseBody, track::Tracker, Config};
use crate::CloseReason;

/// The header that tells nginx (and proxies that copied it) not to buffer the response.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The service made by [`SseLayer`](super::SseLayer): it inserts an
/// [`SseConnection`](crate::SseConnection) into each request and wraps each response body in a
/// [`ResponseBody`].
///
/// With no framework, the layer goes around any tower service:
///
/// ```
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_sse::{test::collect_events, SseConnection, SseLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::BoxError> {
/// let service = ServiceBuilder::new()
///     .layer(SseLayer::new())
///     .service_fn(|request: http::Request<()>| async move {
///         // Every request carries the handle on its response.
///         let connection = request.extensions().get::<SseConnection>().cloned();
///         assert!(connection.is_some());
///         let (emitter, body) = tower_sse::channel(4);
///         emitter.try_send("hello")?;
///         emitter.complete();
///         Ok::<_, tower_sse::BoxError>(tower_sse::response(body))
///     });
/// let response = service.oneshot(http::Request::new(())).await?;
/// assert_eq!(response.headers()["content-type"], "text/event-stream");
/// let events = collect_events(response.into_body()).await?;
/// assert_eq!(events[0].data, "hello");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SseService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> SseService<S> {
    pub(super) fn new(inner: S, config: Arc<Config>) -> Self {
        SseService { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SseService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let (connection, tracker) = Tracker::start(self.config.clone(), request.extensions());
        request.extensions_mut().insert(connection.clone());
        let inner = connection.scope(|| self.inner.call(request));
        ResponseFuture {
            tracker: Some(tracker),
            inner,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for SseService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

pin_project! {
    /// The response future of [`SseService`]: the inner service's, whose response gets an
    /// [`ResponseBody`] (and, for event streams, the SSE headers).
    ///
    /// Dropped before it completes, it reports
    /// [`CloseReason::Disconnected`](crate::CloseReason::Disconnected); an error from the inner
    /// service is reported as [`CloseReason::Error`](crate::CloseReason::Error). While it polls
    /// the inner service, a [`channel`](crate::channel) built there links itself to the
    /// request's [`SseConnection`](crate::SseConnection).
    pub struct ResponseFuture<F> {
        // First, so that a future dropped early reports (and tells linked channels why)
        // before the inner future and what it holds are dropped.
        tracker: Option<Tracker>,
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(tracker) = this.tracker.as_ref() else {
            panic!("ResponseFuture polled after completion");
        };
        let inner = this.inner;
        let result = ready!(tracker.connection.scope(|| inner.poll(cx)));
        let mut tracker = this
            .tracker
            .take()
            .expect("ResponseFuture polled after completion");
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                tracker.report(CloseReason::Error);
                return Poll::Ready(Err(err));
            }
        };
        let (mut parts, body) = response.into_parts();
        // Compressed bytes have no boundaries to find: such a stream passes untouched.
        let streaming = crate::framing::classify(&parts.headers, &body.size_hint())
            .filter(|_| !parts.headers.contains_key(header::CONTENT_ENCODING));
        tracker.responded(parts.status, streaming.is_some());
        let body = match streaming {
            Some(streaming) => {
                set_sse_headers(&mut parts.headers);
                ResponseBody::stream(body, tracker, streaming)
            }
            None => ResponseBody::pass_through(body, tracker),
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

/// Makes a streaming response fit for streaming through caches and proxies; headers the
/// application set stay as they are. `Connection` is left to the server (and is forbidden in
/// HTTP/2).
fn set_sse_headers(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_LENGTH);
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    headers
        .entry(X_ACCEL_BUFFERING)
        .or_insert(HeaderValue::from_static("no"));
}
