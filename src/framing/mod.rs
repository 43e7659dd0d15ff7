//! The framings: how one item of a streaming response is written on the wire.
//!
//! Every streaming response in this crate runs on one channel ([`Emitter`](crate::Emitter)),
//! one body ([`FramedBody`](crate::FramedBody)) and one layer ([`SseLayer`](crate::SseLayer)).
//! A framing only says what is specific to it: how to encode one item, the record written for
//! [`complete_with_error`](crate::Emitter::complete_with_error), and its content type. The
//! layer knows from the content type whether it may write keep-alives (SSE comments only) and
//! where an item ends, so it never cuts one short.
//!
//! | framing | items | content type | terminal error record | keep-alive |
//! |---|---|---|---|---|
//! | [`Sse`] | [`Event`] | `text/event-stream` | an event named `stream-error` | `:\n` comments |
//! | [`Ndjson`] | any `Serialize` | `application/x-ndjson` | `{"error":"..."}` line | never |
//! | [`JsonLines`] | any `Serialize` | `application/jsonl` | `{"error":"..."}` line | never |
//! | [`JsonSeq`] | any `Serialize` | `application/json-seq` | RS `{"error":"..."}` LF | never |
//! | [`Text`] | text | `text/plain; charset=utf-8` | none: the response aborts | never |
//!
//! ```
//! use http_body_util::BodyExt;
//! use serde_json::json;
//! use tower_sse::framing::{JsonSeq, Ndjson, Text};
//!
//! # #[cfg(feature = "json")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_sse::BoxError> {
//! let (emitter, body) = tower_sse::framed_channel(Ndjson, 4);
//! emitter.send(json!({ "token": "Hel" })).await?;
//! emitter.send(json!({ "token": "lo" })).await?;
//! emitter.complete();
//! let wire = body.collect().await?.to_bytes();
//! assert_eq!(wire, "{\"token\":\"Hel\"}\n{\"token\":\"lo\"}\n");
//!
//! let (emitter, body) = tower_sse::framed_channel(JsonSeq, 4);
//! emitter.send(json!([1, 2])).await?;
//! drop(emitter); // the last emitter gone: the stream ends cleanly
//! assert_eq!(body.collect().await?.to_bytes(), "\u{1e}[1,2]\n");
//!
//! let (emitter, body) = tower_sse::framed_channel(Text, 4);
//! emitter.send("as ").await?;
//! emitter.send(String::from("it comes")).await?;
//! drop(emitter);
//! assert_eq!(body.collect().await?.to_bytes(), "as it comes");
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "json"))]
//! # fn main() {}
//! ```

#[cfg(feature = "json")]
mod json;
mod sse;
mod text;

use std::{fmt, marker::PhantomData};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap};
use http_body::SizeHint;

use crate::{BoxError, Event};

#[cfg(feature = "json")]
pub use json::{JsonLines, JsonSeq, Ndjson};
pub use sse::Sse;
pub use text::Text;

/// Items at least this long are handed to the connection as their own frame, without a copy.
const ZERO_COPY_BYTES: usize = 4 * 1024;

/// The room a new frame buffer starts with, so that a burst of small items fills it without
/// growing it step by step.
const FIRST_FRAME_BYTES: usize = 4 * 1024;

/// A wire format for streaming responses: Server-Sent Events, NDJSON, JSON Lines, JSON text
/// sequences or raw text. The crate provides every implementation.
pub trait Framing: Clone + fmt::Debug + Send + Sync + Unpin + 'static + sealed::Sealed {
    /// One item in its finished wire form, as the channel carries it: [`Event`] for SSE, a
    /// [`Record`] for the other framings.
    type Item: sealed::WireItem;

    /// The `content-type` of a response in this framing.
    const CONTENT_TYPE: &'static str;

    /// The record written last when a stream ends with an error and the channel was asked to
    /// say so ([`ChannelBuilder::error_event`](crate::ChannelBuilder::error_event)), or `None`
    /// when the framing has no way to tell an error from data (the response is aborted then).
    fn error_item(&self, message: &str) -> Option<Self::Item>;
}

/// How a framing encodes one kind of input: what `send` takes and what a [`FramedBody`]'s
/// stream may yield.
///
/// [`Sse`] takes anything that is `Into<Event>`; [`Ndjson`], [`JsonLines`] and [`JsonSeq`]
/// take any `serde::Serialize` value; [`Text`] takes anything that is `Into<String>`. Each also
/// takes its own finished items, which is what a channel's receiver yields.
///
/// [`FramedBody`]: crate::FramedBody
pub trait Encode<T>: Framing {
    /// What a failed send hands back: the event for SSE, the value itself for the others.
    type Unsent;
    /// What encoding keeps of the input so that a failed send can hand it back.
    type Kept;

    /// Encodes `input` into its wire item; on failure hands it back with the reason.
    fn encode(input: T) -> Encoded<Self::Item, Self::Kept, Self::Unsent>;

    /// What a send that did not go through hands back, from what [`encode`](Self::encode)
    /// returned.
    fn unsent(item: Self::Item, kept: Self::Kept) -> Self::Unsent;

    /// Appends the wire form of `input` to `frame`, or returns it whole when it is large
    /// enough to go out as a frame of its own without a copy.
    fn write(input: T, frame: &mut BytesMut) -> Result<Option<Bytes>, BoxError>;

    /// The wire form of `input` as a frame of its own, for an item that was the only one ready:
    /// an item that already holds its bytes (a broadcast event, say) goes out as those very
    /// bytes, with no frame buffer to allocate and copy into.
    fn write_alone(input: T) -> Result<Bytes, BoxError> {
        let mut frame = BytesMut::new();
        Ok(match Self::write(input, &mut frame)? {
            Some(bytes) => bytes,
            None => frame.freeze(),
        })
    }
}

/// What [`Encode::encode`] returns: the item and what was kept of the input, or the input
/// handed back with the reason it could not be encoded.
pub type Encoded<I, K, U> = Result<(I, K), (U, BoxError)>;

/// One item of an NDJSON, JSON Lines, JSON text sequence or text stream, in its finished wire
/// form (delimiters included). The framing `F` made it, so it only goes into streams of `F`.
pub struct Record<F> {
    bytes: Bytes,
    framing: PhantomData<fn() -> F>,
}

impl<F> Record<F> {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Record {
            bytes,
            framing: PhantomData,
        }
    }

    /// The exact bytes this record puts on the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl<F> Clone for Record<F> {
    fn clone(&self) -> Self {
        Record::new(self.bytes.clone())
    }
}

impl<F> PartialEq for Record<F> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<F> Eq for Record<F> {}

impl<F> fmt::Debug for Record<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Record")
            .field(&String::from_utf8_lossy(&self.bytes))
            .finish()
    }
}

/// Appends a finished item to `frame`, or hands it back whole when it is large.
#[inline(always)]
fn write_item<I: sealed::WireItem>(item: I, frame: &mut BytesMut) -> Option<Bytes> {
    if !item.is_inline() && item.encoded_len() >= ZERO_COPY_BYTES {
        return Some(item.into_bytes());
    }
    item.write_to(frame);
    None
}

/// Gives an empty frame buffer its first room. The body does so before it writes the first of
/// several ready items into its frame, so that writes need not check.
#[inline(always)]
pub(crate) fn reserve_first(frame: &mut BytesMut) {
    if frame.capacity() == 0 {
        frame.reserve(FIRST_FRAME_BYTES);
    }
}

/// The traits only this crate implements.
pub(crate) mod sealed {
    use bytes::{Bytes, BytesMut};

    /// Implemented by the crate's framings only.
    pub trait Sealed {}

    /// An item already in its wire form.
    pub trait WireItem: Clone + std::fmt::Debug + Send + Sync + Unpin + 'static {
        /// Whether it is kept inside itself, and so is never large: no need to measure it.
        fn is_inline(&self) -> bool {
            false
        }
        /// How many bytes it writes.
        fn encoded_len(&self) -> usize;
        /// Appends its bytes to `out`.
        fn write_to(&self, out: &mut BytesMut);
        /// Its bytes, without a copy where it can.
        fn into_bytes(self) -> Bytes;
    }
}

impl<F: 'static> sealed::WireItem for Record<F> {
    #[inline(always)]
    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    #[inline(always)]
    fn write_to(&self, out: &mut BytesMut) {
        out.extend_from_slice(&self.bytes);
    }

    fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl sealed::WireItem for Event {
    #[inline(always)]
    fn is_inline(&self) -> bool {
        Event::is_inline(self)
    }

    #[inline(always)]
    fn encoded_len(&self) -> usize {
        Event::encoded_len(self)
    }

    #[inline(always)]
    fn write_to(&self, out: &mut BytesMut) {
        Event::write_to(self, out)
    }

    fn into_bytes(self) -> Bytes {
        Event::into_bytes(self)
    }
}

/// What a streaming response's items look like to [`SseLayer`](crate::SseLayer), which decides
/// from them where it may end the stream and whether it may write keep-alives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streaming {
    /// `text/event-stream`: events end at a blank line; keep-alive comments go between them.
    Events,
    /// NDJSON, JSON Lines, JSON text sequences: every item ends with a line feed; nothing of
    /// the layer's own may go in.
    Lines,
    /// Raw text: the stream may end between any two frames; nothing of the layer's own may go
    /// in.
    Chunks,
}

/// Classifies a response for the layer by its content type (any case, parameters allowed):
/// an event stream, a stream of one of the other framings, or no stream at all (`None`).
///
/// A response of another framing whose body has a known length is no stream: a complete NDJSON
/// document or a `text/plain` error answer passes through untouched.
pub(crate) fn classify(headers: &HeaderMap, size: &SizeHint) -> Option<Streaming> {
    let value = headers.get(header::CONTENT_TYPE)?.as_bytes();
    let essence = value
        .split(|&b| b == b';')
        .next()
        .unwrap_or(&[])
        .trim_ascii();
    let is = |name: &str| essence.eq_ignore_ascii_case(name.as_bytes());
    if is("text/event-stream") {
        return Some(Streaming::Events);
    }
    if size.exact().is_some() {
        return None;
    }
    if is("application/x-ndjson")
        || is("application/jsonl")
        || is("application/jsonlines")
        || is("application/x-jsonlines")
        || is("application/json-seq")
    {
        Some(Streaming::Lines)
    } else if is("text/plain") {
        Some(Streaming::Chunks)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use http::{header::CONTENT_TYPE, HeaderMap, HeaderValue};
    use http_body::SizeHint;

    use super::{classify, Streaming};

    fn classified(value: &'static str, size: SizeHint) -> Option<Streaming> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
        classify(&headers, &size)
    }

    #[test]
    fn content_types_say_how_a_response_streams() {
        let open = SizeHint::default;
        for value in [
            "text/event-stream",
            "Text/Event-Stream",
            "text/event-stream; charset=utf-8",
            " text/event-stream ;charset=UTF-8",
        ] {
            assert_eq!(
                classified(value, open()),
                Some(Streaming::Events),
                "{value}"
            );
            // An event stream is one whatever its length.
            let exact = SizeHint::with_exact(10);
            assert_eq!(classified(value, exact), Some(Streaming::Events), "{value}");
        }
        for value in [
            "application/x-ndjson",
            "Application/JSONL",
            "application/json-seq",
            "application/x-ndjson; charset=utf-8",
        ] {
            assert_eq!(classified(value, open()), Some(Streaming::Lines), "{value}");
            assert_eq!(classified(value, SizeHint::with_exact(3)), None, "{value}");
        }
        assert_eq!(
            classified("text/plain; charset=utf-8", open()),
            Some(Streaming::Chunks)
        );
        assert_eq!(classified("text/plain", SizeHint::with_exact(5)), None);
        for value in [
            "application/json",
            "text/event-streams",
            "text/html",
            "",
            ";text/event-stream",
        ] {
            assert_eq!(classified(value, open()), None, "{value}");
        }
        assert_eq!(classify(&HeaderMap::new(), &SizeHint::default()), None);
    }
}
