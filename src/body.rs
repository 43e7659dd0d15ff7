//! [`FramedBody`]: an `http_body::Body` over any stream of items in one of the
//! [framings](crate::framing), and [`response`] / [`framed_response`] to send it.
//!
//! One body serves every framing: it encodes each item with its framing, coalesces ready items
//! into one frame, and hands large ones over without a copy.

use std::{
    fmt,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::{
    framing::{reserve_first, Encode, Framing, Sse},
    BoxError,
};

/// How many bytes of ready items go into one frame unless [`FramedBody::max_frame_bytes`] says
/// otherwise.
const DEFAULT_MAX_FRAME_BYTES: u32 = 64 * 1024;

/// The body of a Server-Sent Events response: a [`FramedBody`] in the [`Sse`] framing.
///
/// It writes events only: **keep-alives, the streaming headers, time limits and graceful
/// shutdown come from [`SseLayer`](crate::SseLayer)** around the service, not from the body.
///
/// **An axum handler may return it only with the crate's `axum` feature** (`tower-sse = {
/// version = "0.1", features = ["axum"] }`). Without it the error never names the feature:
/// ``the trait `IntoResponse` is not implemented for `SseBody<EventReceiver>` ``, or
/// ``the trait `Handler<_, _>` is not implemented for fn item``.
///
/// ```
/// # #[cfg(feature = "axum")] mod handler {
/// use futures::stream::{self, Stream};
/// use tower_sse::{Event, SseBody};
///
/// // With the `axum` feature, the body is the response: 200, `text/event-stream`.
/// async fn ticks() -> SseBody<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
///     SseBody::new(stream::iter((1..=3).map(|n| Ok(Event::new().data(n.to_string())))))
/// }
///
/// pub fn app() -> axum::Router {
///     axum::Router::new()
///         .route("/ticks", axum::routing::get(ticks))
///         .layer(tower_sse::SseLayer::new())
/// }
/// # }
/// ```
pub type SseBody<S> = FramedBody<Sse, S>;

pin_project! {
    #[project = FramedBodyProj]
    /// A streaming response body that writes each item of a stream in its exact wire form, in
    /// the framing `F`: [`SseBody`] for Server-Sent Events, `FramedBody<Ndjson, _>` for NDJSON
    /// and so on (see [`framing`](crate::framing)).
    ///
    /// While the stream has more items ready, they are coalesced into one frame (up to
    /// [`max_frame_bytes`](FramedBody::max_frame_bytes)), so a fast producer costs far less
    /// than a write per item; as soon as the stream is pending, what is buffered goes out, so
    /// latency is never traded for throughput. Large items go out as their own frame without a
    /// copy.
    ///
    /// An error from the stream (or an item its framing cannot encode) ends the body with that
    /// error, after the items before it: the client sees an aborted response, not a clean end.
    /// hyper drops what it has not yet written when a body fails, so an error that follows
    /// items handed over since the body last said it was pending waits one poll: over HTTP/1.1
    /// the connection writes them in that turn. Over HTTP/2 the connection's own task writes,
    /// which one poll does not wait for; [`SseLayer`](crate::SseLayer) holds the error back
    /// long enough for it.
    ///
    /// The body writes items only: keep-alives, the streaming headers, time limits and graceful
    /// shutdown come from [`SseLayer`](crate::SseLayer) around the service.
    ///
    /// ```
    /// use futures::stream;
    /// use tower_sse::{Event, SseBody};
    ///
    /// let events = stream::iter(["hello", "world"].map(|text| Ok::<_, std::convert::Infallible>(Event::from(text))));
    /// let response = tower_sse::response(SseBody::new(events));
    /// assert_eq!(response.headers()["content-type"], "text/event-stream");
    /// ```
    pub struct FramedBody<F, S> {
        #[pin]
        stream: S,
        // Ready items waiting to be handed over as one frame.
        frame: BytesMut,
        // A `u32`, so `handed_over` fits beside it.
        max_frame_bytes: u32,
        // A large item that arrived while `frame` held others: it goes out next, on its own.
        held: Option<Bytes>,
        state: State,
        // A frame went out since the body last said it was pending: the connection may not
        // have written it yet.
        handed_over: bool,
        framing: PhantomData<fn() -> F>,
    }
}

/// Where the body is in its life.
enum State {
    /// Pulling items from the stream.
    Streaming,
    /// The stream failed: the error is next, once what went out before it is written.
    Error(BoxError),
    /// The stream ended and every item is handed over: the end is next. The body says it is
    /// over only once it handed over `None`, one poll later than it could, so that the layers
    /// around it see that `None` (TraceLayer's `on_eos` waits for it; hyper polls no further
    /// once a body reports its end).
    Ending,
    /// The end, or an error, was handed over.
    Done,
}

impl<F, S, T, E> FramedBody<F, S>
where
    F: Encode<T>,
    S: Stream<Item = Result<T, E>>,
    E: Into<BoxError>,
{
    /// A body that writes the items of `stream`: events for [`SseBody`], serde values for the
    /// JSON framings, text for [`Text`](crate::framing::Text).
    ///
    /// The stream must be `Send` for the body to be sent to a server, but need not be `Sync`.
    pub fn new(stream: S) -> Self {
        FramedBody {
            stream,
            frame: BytesMut::new(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            held: None,
            state: State::Streaming,
            handed_over: false,
            framing: PhantomData,
        }
    }

    /// Sets how many bytes of ready items may be coalesced into one frame (default 64 KiB).
    ///
    /// An item is never split: one larger than this goes out as a frame of its own.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        self
    }
}

impl<F, S, T, E> http_body::Body for FramedBody<F, S>
where
    F: Encode<T>,
    S: Stream<Item = Result<T, E>>,
    E: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match poll_items::<F, S, T, E>(&mut this, cx) {
            Poll::Ready(Some(Err(err))) if *this.handed_over => {
                // What went out since the last pending may still sit in the connection's
                // buffer, which the error would drop: give the connection one turn to write it.
                *this.state = State::Error(err);
                *this.handed_over = false;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            polled => {
                *this.handed_over = matches!(polled, Poll::Ready(Some(Ok(_))));
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Ending | State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The body's next frame, its error or its end, from the items the stream has ready.
fn poll_items<F, S, T, E>(
    this: &mut FramedBodyProj<'_, F, S>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
where
    F: Encode<T>,
    S: Stream<Item = Result<T, E>>,
    E: Into<BoxError>,
{
    match std::mem::replace(this.state, State::Done) {
        State::Streaming => *this.state = State::Streaming,
        State::Error(err) => return Poll::Ready(Some(Err(err))),
        State::Ending | State::Done => return Poll::Ready(None),
    }
    if let Some(bytes) = this.held.take() {
        return Poll::Ready(Some(Ok(Frame::data(bytes))));
    }
    // A small event that may be the only one ready: it goes out as it is, with no frame
    // buffer to allocate and copy into, unless another one follows.
    let mut lone: Option<T> = None;
    while this.frame.len() < *this.max_frame_bytes as usize {
        match this.stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(item))) => {
                if this.frame.is_empty() && lone.is_none() {
                    lone = Some(item);
                    continue;
                }
                // More than one is ready: they share the frame.
                if let Some(first) = lone.take() {
                    reserve_first(this.frame);
                    match F::write(first, this.frame) {
                        Ok(None) => {}
                        Ok(Some(bytes)) => {
                            // The first was large: it goes out now, the one in hand next.
                            match F::write(item, this.frame) {
                                Ok(None) => {}
                                Ok(Some(next)) => *this.held = Some(next),
                                Err(err) => *this.state = State::Error(err),
                            }
                            return Poll::Ready(Some(Ok(Frame::data(bytes))));
                        }
                        Err(err) => {
                            *this.state = State::Done;
                            return Poll::Ready(Some(Err(err)));
                        }
                    }
                }
                match F::write(item, this.frame) {
                    Ok(None) => {}
                    Ok(Some(bytes)) if this.frame.is_empty() => {
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    Ok(Some(bytes)) => {
                        *this.held = Some(bytes);
                        break;
                    }
                    Err(err) => {
                        if this.frame.is_empty() {
                            *this.state = State::Done;
                            return Poll::Ready(Some(Err(err)));
                        }
                        *this.state = State::Error(err);
                        break;
                    }
                }
            }
            Poll::Ready(Some(Err(err))) => {
                let err = err.into();
                if this.frame.is_empty() && lone.is_none() {
                    *this.state = State::Done;
                    return Poll::Ready(Some(Err(err)));
                }
                *this.state = State::Error(err);
                break;
            }
            Poll::Ready(None) => {
                *this.state = State::Ending;
                break;
            }
            Poll::Pending if this.frame.is_empty() && lone.is_none() => {
                // Idle: give back the spare buffer instead of holding it while nothing flows.
                *this.frame = BytesMut::new();
                return Poll::Pending;
            }
            Poll::Pending => break,
        }
    }
    if let Some(item) = lone {
        return match F::write_alone(item) {
            Ok(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Err(err) => {
                *this.state = State::Done;
                Poll::Ready(Some(Err(err)))
            }
        };
    }
    if this.frame.is_empty() {
        *this.state = State::Done;
        return Poll::Ready(None);
    }
    Poll::Ready(Some(Ok(Frame::data(this.frame.split().freeze()))))
}

impl<F, S> fmt::Debug for FramedBody<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramedBody")
            .field("buffered", &self.frame.len())
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish_non_exhaustive()
    }
}

/// Wraps a body in a `200 OK` response with the headers every event stream needs:
/// `content-type: text/event-stream`, `cache-control: no-cache` (never serve a stale stream)
/// and `x-accel-buffering: no` (proxies such as nginx must not buffer it).
pub fn response<B>(body: B) -> Response<B> {
    streaming_response(Sse::CONTENT_TYPE, body)
}

/// Wraps a body of any framing in a `200 OK` response with its content type (such as
/// `application/x-ndjson`), `cache-control: no-cache` and `x-accel-buffering: no`.
///
/// ```
/// use futures::stream;
/// use tower_sse::{framing::Ndjson, FramedBody};
///
/// let values = stream::iter([1, 2, 3].map(Ok::<_, std::convert::Infallible>));
/// let response = tower_sse::framed_response(FramedBody::<Ndjson, _>::new(values));
/// assert_eq!(response.headers()["content-type"], "application/x-ndjson");
/// ```
pub fn framed_response<F: Framing, S>(body: FramedBody<F, S>) -> Response<FramedBody<F, S>> {
    streaming_response(F::CONTENT_TYPE, body)
}

/// A `200 OK` streaming response with this content type and the anti-buffering headers.
pub(crate) fn streaming_response<B>(content_type: &'static str, body: B) -> Response<B> {
    // Sized for exactly these headers: an idle stream keeps them for as long as it is open.
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    *response.headers_mut() = headers;
    response
}
