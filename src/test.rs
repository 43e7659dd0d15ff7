//! Helpers for your own tests: read a response body's events the way a browser would.
//!
//! [`collect_events`] reads a body to its end and parses it with the crate's [`Parser`];
//! [`EventReader`] reads one event or one frame at a time, for streams that never end and for
//! keep-alive timing under tokio's paused clock. They take any `http_body::Body`, so they work
//! on what a handler, a tower service (with or without [`SseLayer`](crate::SseLayer)) or an
//! HTTP client returns.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_sse::{channel, test::EventReader, SseLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_sse::BoxError> {
//! // With the clock paused (`#[tokio::test(start_paused = true)]`), time only moves when the
//! // runtime has nothing else to do, so a 15 s keep-alive takes no real time at all.
//! let service = SseLayer::new().layer(service_fn(|_request: http::Request<()>| async {
//!     let (emitter, body) = channel(4);
//!     tokio::spawn(async move {
//!         emitter.send("first").await.ok();
//!         tokio::time::sleep(Duration::from_secs(20)).await;
//!         emitter.send("second").await.ok();
//!     });
//!     Ok::<_, std::convert::Infallible>(tower_sse::response(body))
//! }));
//! let response = service.oneshot(http::Request::new(())).await?;
//! let mut reader = EventReader::new(response.into_body());
//!
//! assert_eq!(reader.next_event().await?.unwrap().data, "first");
//! assert_eq!(&reader.next_frame().await?.unwrap()[..], b":\n"); // the keep-alive, after 15 s
//! assert_eq!(reader.next_event().await?.unwrap().data, "second");
//! assert!(reader.next_event().await?.is_none()); // the producer is gone: the stream ended
//! # Ok(())
//! # }
//! ```

use std::{future::poll_fn, pin::Pin};

use bytes::{Buf, Bytes};
use http_body::Body;

use crate::{BoxError, MessageEvent, Parser};

/// Reads `body` to its end and returns every event in it, parsed as a browser would.
///
/// Fails with the body's error, or the parser's if an event is larger than it holds (1 MiB);
/// the events before the failure are lost with it, so use an [`EventReader`] to look at them.
///
/// ```
/// use futures::stream;
/// use tower_sse::{test::collect_events, Event, SseBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::BoxError> {
/// let events = stream::iter([Ok::<_, std::convert::Infallible>(Event::from("hello"))]);
/// let events = collect_events(SseBody::new(events)).await?;
/// assert_eq!(events[0].data, "hello");
/// assert_eq!(events[0].event, "message");
/// # Ok(())
/// # }
/// ```
pub async fn collect_events<B>(body: B) -> Result<Vec<MessageEvent>, BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut reader = EventReader::new(body);
    let mut events = Vec::new();
    while let Some(event) = reader.next_event().await? {
        events.push(event);
    }
    Ok(events)
}

/// Reads a response body one event or one frame at a time.
///
/// Every byte read, through either method, goes through one [`Parser`], so
/// [`next_event`](EventReader::next_event) after a few [`next_frame`](EventReader::next_frame)
/// calls returns the events those frames completed first.
///
/// ```
/// use tower_sse::{channel, test::EventReader, Event, EventName};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::BoxError> {
/// const DONE: EventName = EventName::new("done");
/// let (emitter, body) = channel(4);
/// emitter.send(Event::new().id("1")?.data("piece")).await?;
/// // Without a data line, a browser would dispatch nothing, and neither does the reader.
/// emitter.send(Event::new().event_name(DONE).data("")).await?;
/// emitter.complete();
///
/// let mut reader = EventReader::new(body);
/// let piece = reader.next_event().await?.unwrap();
/// assert_eq!((&*piece.data, &*piece.last_event_id), ("piece", "1"));
/// assert_eq!(reader.next_event().await?.unwrap().event, "done");
/// assert!(reader.next_event().await?.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct EventReader<B> {
    body: Pin<Box<B>>,
    parser: Parser,
    ended: bool,
}

impl<B> EventReader<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    /// A reader of `body`.
    pub fn new(body: B) -> Self {
        EventReader {
            body: Box::pin(body),
            parser: Parser::new(),
            ended: false,
        }
    }

    /// The next event, or `None` once the body has ended and every event was returned.
    pub async fn next_event(&mut self) -> Result<Option<MessageEvent>, BoxError> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            if self.next_frame().await?.is_none() {
                return Ok(self.parser.next_event());
            }
        }
    }

    /// The bytes of the next data frame exactly as the body wrote them (keep-alives and
    /// comments included), or `None` at the end of the body. Trailers are skipped.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, BoxError> {
        while !self.ended {
            match poll_fn(|cx| self.body.as_mut().poll_frame(cx)).await {
                None => {
                    self.ended = true;
                    self.parser.finish();
                }
                Some(Err(err)) => {
                    self.ended = true;
                    return Err(err.into());
                }
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        let bytes = data.copy_to_bytes(data.remaining());
                        self.parser.feed(&bytes)?;
                        return Ok(Some(bytes));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The last `retry:` value the stream sent, if any.
    pub fn retry(&self) -> Option<std::time::Duration> {
        self.parser.retry()
    }
}
