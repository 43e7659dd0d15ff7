//! Server-Sent Events as a first-class streaming response for hyper, tower and axum.
//!
//! # Quick start (axum)
//!
//! ```toml
//! [dependencies]
//! tower-sse = { version = "0.1", features = ["axum"] }
//! ```
//!
//! ```
//! # #[cfg(feature = "axum")] mod quick_start {
//! use axum::{routing::post, Router};
//! use tower_sse::{channel, EventReceiver, SseBody, SseLayer};
//!
//! async fn answer() -> SseBody<EventReceiver> {
//!     let (emitter, body) = channel(16);
//!     tokio::spawn(async move {
//!         for piece in ["Hel", "lo", "!"] {
//!             if emitter.send(piece).await.is_err() {
//!                 return; // the client went away
//!             }
//!         }
//!         emitter.complete();
//!     });
//!     body
//! }
//!
//! pub fn app() -> Router {
//!     Router::new().route("/answer", post(answer)).layer(SseLayer::new())
//! }
//! # }
//! ```
//!
//! **Without `features = ["axum"]`** an axum handler that returns an [`SseBody`] does not
//! compile, and the error never names the feature: it says that
//! ``the trait `IntoResponse` is not implemented for `SseBody<EventReceiver>` ``, or that
//! ``the trait `Handler<_, _>` is not implemented for fn item``. Turn the feature on; it is
//! the whole of the axum glue:
//!
//! * [`SseBody`] (so the body of every [`channel`]) is an `IntoResponse`, with the headers of
//!   [`response`];
//! * [`SseConnection`] is an extractor (`500` without [`SseLayer`]), and
//!   `Option<SseConnection>` one that never fails;
//! * [`LastEventId`] and `Option<LastEventId>` are extractors (`400` when malformed).
//!
//! The body streams the events; [`SseLayer`] adds what a served stream needs around it:
//! keep-alives, the SSE headers, disconnect detection, a time limit and graceful shutdown
//! (with a [`CancellationToken`], or any future through `graceful_shutdown_on`). A
//! [`channel`] without the layer sends no keep-alives.
//!
//! # Coming from `axum::response::sse`
//!
//! | axum | tower-sse |
//! | --- | --- |
//! | `Sse::new(stream)` | [`SseBody::new(stream)`](SseBody::new), or the body of a [`channel`] |
//! | `Sse::keep_alive(KeepAlive::new())` | [`SseLayer::new()`](SseLayer::new) around the routes: 15 s, only between events |
//! | `KeepAlive::interval` / `text` / `event` | [`SseLayer::keep_alive`] / [`keep_alive_comment`](SseLayer::keep_alive_comment) / [`keep_alive_event`](SseLayer::keep_alive_event) |
//! | `Event::default()` | [`Event::new()`](Event::new) (`data`, `comment`, `retry`, `json_data` alike) |
//! | `Event::event(name)`, `Event::id(id)` (panic on a line break) | [`Event::event`] / [`Event::id`] return an [`EventError`]; [`event_name`](Event::event_name) / [`event_id`](Event::event_id) take an [`EventName`] / [`EventId`] checked at build time |
//! | `Event::into_data_writer()` | [`Event::data_writer()`](Event::data_writer) |
//! | a `Stream` behind an mpsc channel | [`channel`]: an [`SseEmitter`] with `send` / `complete` / `complete_with_error` / `closed` |
//!
//! # What is in the crate
//!
//! * [`Event`] builds one event straight into its exact wire form, and refuses input that
//!   would inject lines with a typed [`EventError`]; [`EncodedEvent`] is one encoded once and
//!   shared by every clone.
//! * [`SseBody`] streams any `Stream` of events as an `http_body::Body`, coalescing ready
//!   events into one frame; [`response`] wraps it with the headers an event stream needs.
//! * [`channel`] gives an [`SseEmitter`] (send / complete / complete_with_error, with
//!   backpressure and a `closed()` signal) and the body it feeds.
//! * [`SseLayer`] serves event streams safely from any tower service: keep-alives between
//!   events, SSE headers, a time limit, graceful shutdown, and an [`SseConnection`] in every
//!   request that tells how and when its response ended. Its service, response future and
//!   body live in [`layer`], as tower-http keeps them beside each middleware.
//! * [`StallGuard`] closes connections whose client stopped reading, and [`Shutdown`] stops a
//!   server with a hard deadline: limits hold even against peers that never read.
//! * [`framing`]: the same channel, body and layer for NDJSON, JSON Lines, JSON text sequences
//!   and raw text ([`framed_channel`], [`FramedBody`], [`framed_response`]), with the right
//!   content type, no keep-alives inside them and an Ollama-style `{"error": ...}` record.
//! * [`Parser`] decodes an event stream exactly as a browser's `EventSource` does, and
//!   [`test`](mod@test) reads your handlers' responses with it in your own tests.
//! * [`Hub`] broadcasts to many subscribers, each event encoded once, with bounded queues and
//!   a [`LagPolicy`]; its topics keep a [`ReplayLog`] so a client that reconnects with a
//!   [`LastEventId`] resumes with no gap and no duplicate. With the `redis` feature, the logs
//!   live in Redis Streams, shared by every server on the same Redis.
//! * `client` (feature `client`) reads event streams: any method, headers and body over any
//!   tower service, with checked responses, reconnection with `Last-Event-ID` and limits.
//! * `llm` (feature `llm`) writes the streams of the OpenAI Chat Completions, OpenAI Responses
//!   and Anthropic Messages APIs exactly as their official SDKs expect them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
mod axum;
mod body;
#[cfg(feature = "client")]
pub mod client;
mod close;
mod connection;
mod emitter;
mod event;
pub mod framing;
mod guard;
mod hub;
pub mod layer;
#[cfg(feature = "llm")]
pub mod llm;
mod parse;
mod replay;
pub mod test;

pub use body::{framed_response, response, FramedBody, SseBody};
pub use close::CloseReason;
pub use connection::{CloseInfo, SseConnection};
pub use emitter::{
    channel, framed_channel, ChannelBuilder, Emitter, EventReceiver, Receiver, SendError,
    SendErrorKind, SseEmitter, TrySendError, Unsent,
};
pub use event::{
    DataWriter, EncodedEvent, Event, EventError, EventErrorKind, EventField, EventId, EventName,
};
#[cfg(feature = "axum")]
pub use guard::GuardedListener;
pub use guard::{ConnectionHandle, GuardedIo, Shutdown, StallGuard};
pub use hub::{Hub, HubBuilder, LagPolicy, PublishError, Subscriber, Topic};
pub use layer::SseLayer;
pub use parse::{MessageEvent, ParseError, Parser};
pub use replay::{LastEventId, LastEventIdError, Replay, ReplayError, ReplayLog};
/// The shutdown signal [`SseLayer::graceful_shutdown`] takes, re-exported from `tokio-util` so
/// that it needs no other dependency.
pub use tokio_util::sync::CancellationToken;

/// The error type that bodies and streams in this crate report: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
