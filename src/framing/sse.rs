//! [`Sse`]: Server-Sent Events, the crate's first framing.

use bytes::{Bytes, BytesMut};

use super::{sealed, write_item, Encode, Encoded, Framing};
use crate::{BoxError, Event, EventError};

/// The event name [`Sse`] gives the record of a stream that ended with an error, unless told
/// otherwise. Not `error`: in a browser that would fire the same listeners as `EventSource`'s
/// own connection errors.
const DEFAULT_ERROR_EVENT: &str = "stream-error";

/// Server-Sent Events (`text/event-stream`): items are [`Event`]s, keep-alives are comment
/// lines written by [`SseLayer`](crate::SseLayer) between events.
///
/// A stream that ends with an error, when asked to say so, ends with an event named
/// `stream-error` (see [`error_event_name`](Sse::error_event_name)) whose data is the message.
#[derive(Debug, Clone)]
pub struct Sse {
    /// The error record without its data: `event: <name>`.
    error_event: Event,
}

impl Sse {
    /// Names the event written when a stream ends with an error (default `stream-error`).
    ///
    /// Fails if the name holds a CR or LF, which would inject lines. Avoid `error`: browsers
    /// call the same `onerror` listeners for it as for a lost connection.
    pub fn error_event_name(mut self, name: impl AsRef<str>) -> Result<Self, EventError> {
        self.error_event = Event::new().event(name)?;
        Ok(self)
    }
}

impl Default for Sse {
    fn default() -> Self {
        Sse {
            error_event: Event::new().event(DEFAULT_ERROR_EVENT).unwrap_or_default(),
        }
    }
}

impl sealed::Sealed for Sse {}

impl Framing for Sse {
    type Item = Event;
    const CONTENT_TYPE: &'static str = "text/event-stream";

    fn error_item(&self, message: &str) -> Option<Event> {
        Some(self.error_event.clone().data(message))
    }
}

impl<T: Into<Event>> Encode<T> for Sse {
    type Unsent = Event;
    type Kept = ();

    #[inline(always)]
    fn encode(input: T) -> Encoded<Event, (), Event> {
        Ok((input.into(), ()))
    }

    #[inline(always)]
    fn unsent(item: Event, (): ()) -> Event {
        item
    }

    #[inline(always)]
    fn write(input: T, frame: &mut BytesMut) -> Result<Option<Bytes>, BoxError> {
        Ok(write_item(input.into(), frame))
    }

    #[inline(always)]
    fn write_alone(input: T) -> Result<Bytes, BoxError> {
        Ok(input.into().into_bytes())
    }
}
