//! [`SseBody`]: an `http_body::Body` over any stream of events, and [`response`] to send it.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::{BoxError, Event};

/// How many bytes of ready events go into one frame unless [`SseBody::max_frame_bytes`] says
/// otherwise.
const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// The room a new frame buffer starts with, so that a burst of small events fills it without
/// growing it step by step.
const FIRST_FRAME_BYTES: usize = 4 * 1024;

/// Events at least this long are handed to the connection as their own frame, without a copy.
const ZERO_COPY_BYTES: usize = 4 * 1024;

pin_project! {
    /// A streaming response body that writes each event of a stream in its exact wire form.
    ///
    /// While the stream has more events ready, they are coalesced into one frame (up to
    /// [`max_frame_bytes`](SseBody::max_frame_bytes)), so a fast producer costs far less than a
    /// write per event; as soon as the stream is pending, what is buffered goes out, so latency
    /// is never traded for throughput. Large events go out as their own frame without a copy.
    ///
    /// An error from the stream ends the body with that error, after the events before it
    /// were handed over: the client sees an aborted response, not a clean end.
    ///
    /// ```
    /// use futures::stream;
    /// use tower_sse::{Event, SseBody};
    ///
    /// let events = stream::iter(["hello", "world"].map(|text| Ok::<_, std::convert::Infallible>(Event::from(text))));
    /// let response = tower_sse::response(SseBody::new(events));
    /// assert_eq!(response.headers()["content-type"], "text/event-stream");
    /// ```
    pub struct SseBody<S> {
        #[pin]
        stream: S,
        // Ready events waiting to be handed over as one frame.
        frame: BytesMut,
        max_frame_bytes: usize,
        // A large event that arrived while `frame` held others: it goes out next, on its own.
        held: Option<Bytes>,
        state: State,
    }
}

/// Where the body is in its life.
enum State {
    /// Pulling events from the stream.
    Streaming,
    /// The stream failed after events were handed over in the same poll. The error waits one
    /// poll, so the connection writes those events before it aborts.
    ErrorAfterData(BoxError),
    /// The error is next.
    Error(BoxError),
    /// The stream ended (cleanly or with an error already reported).
    Done,
}

impl<S, E> SseBody<S>
where
    S: Stream<Item = Result<Event, E>>,
    E: Into<BoxError>,
{
    /// A body that writes the events of `stream`.
    ///
    /// The stream must be `Send` for the body to be sent to a server, but need not be `Sync`.
    pub fn new(stream: S) -> Self {
        SseBody {
            stream,
            frame: BytesMut::new(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            held: None,
            state: State::Streaming,
        }
    }

    /// Sets how many bytes of ready events may be coalesced into one frame (default 64 KiB).
    ///
    /// An event is never split: one larger than this goes out as a frame of its own.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes.max(1);
        self
    }
}

impl<S, E> http_body::Body for SseBody<S>
where
    S: Stream<Item = Result<Event, E>>,
    E: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match std::mem::replace(this.state, State::Done) {
            State::Streaming => *this.state = State::Streaming,
            State::ErrorAfterData(err) => {
                *this.state = State::Error(err);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            State::Error(err) => return Poll::Ready(Some(Err(err))),
            State::Done => return Poll::Ready(None),
        }
        if let Some(bytes) = this.held.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        // A small event that may be the only one ready: it goes out as it is, with no frame
        // buffer to allocate and copy into, unless another one follows.
        let mut lone: Option<Event> = None;
        while this.frame.len() < *this.max_frame_bytes {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    let empty = this.frame.is_empty() && lone.is_none();
                    if event.encoded_len() < ZERO_COPY_BYTES {
                        if empty {
                            lone = Some(event);
                            continue;
                        }
                        if this.frame.capacity() == 0 {
                            this.frame.reserve(FIRST_FRAME_BYTES);
                        }
                        if let Some(first) = lone.take() {
                            first.write_to(this.frame);
                        }
                        event.write_to(this.frame);
                    } else if empty {
                        return Poll::Ready(Some(Ok(Frame::data(event.into_bytes()))));
                    } else {
                        *this.held = Some(event.into_bytes());
                        break;
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    let err = err.into();
                    if this.frame.is_empty() && lone.is_none() {
                        *this.state = State::Done;
                        return Poll::Ready(Some(Err(err)));
                    }
                    *this.state = State::ErrorAfterData(err);
                    break;
                }
                Poll::Ready(None) => {
                    *this.state = State::Done;
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
        if let Some(event) = lone {
            return Poll::Ready(Some(Ok(Frame::data(event.into_bytes()))));
        }
        if this.frame.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(this.frame.split().freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) && self.frame.is_empty() && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}

impl<S> fmt::Debug for SseBody<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseBody")
            .field("buffered", &self.frame.len())
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish_non_exhaustive()
    }
}

/// Wraps a body in a `200 OK` response with the headers every event stream needs:
/// `content-type: text/event-stream`, `cache-control: no-cache` (never serve a stale stream)
/// and `x-accel-buffering: no` (proxies such as nginx must not buffer it).
pub fn response<B>(body: B) -> Response<B> {
    // Sized for exactly these headers: an idle stream keeps them for as long as it is open.
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
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
