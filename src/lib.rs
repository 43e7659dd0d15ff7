//! Server-Sent Events as a first-class streaming response for hyper, tower and axum.
//!
//! * [`Event`] builds one event straight into its exact wire form, and refuses input that
//!   would inject lines with a typed [`EventError`].
//! * [`SseBody`] streams any `Stream` of events as an `http_body::Body`, coalescing ready
//!   events into one frame; [`response`] wraps it with the headers an event stream needs.
//! * [`channel`] gives an [`SseEmitter`] (send / complete / complete_with_error, with
//!   backpressure and a `closed()` signal) and the body it feeds.
//! * [`SseLayer`] serves event streams safely from any tower service: keep-alives between
//!   events, SSE headers, a time limit, graceful shutdown, and an [`SseConnection`] in every
//!   request that tells how and when its response ended.
//! * [`StallGuard`] closes connections whose client stopped reading, and [`Shutdown`] stops a
//!   server with a hard deadline: limits hold even against peers that never read.
//! * [`Parser`] decodes an event stream exactly as a browser's `EventSource` does.
//! * [`Hub`] broadcasts to many subscribers, each event encoded once, with bounded queues and
//!   a [`LagPolicy`]; its topics keep a [`ReplayLog`] so a client that reconnects with a
//!   [`LastEventId`] resumes with no gap and no duplicate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "axum")]
mod axum;
mod body;
mod close;
mod connection;
mod emitter;
mod event;
mod guard;
mod hub;
mod layer;
mod parse;
mod replay;

pub use body::{response, SseBody};
pub use close::CloseReason;
pub use connection::{CloseInfo, SseConnection};
pub use emitter::{
    channel, ChannelBuilder, EventReceiver, SendError, SendErrorKind, SseEmitter, TrySendError,
};
pub use event::{Event, EventError, EventField};
#[cfg(feature = "axum")]
pub use guard::GuardedListener;
pub use guard::{ConnectionHandle, GuardedIo, Shutdown, StallGuard};
pub use hub::{Hub, HubBuilder, LagPolicy, Subscriber, Topic};
pub use layer::{ResponseFuture, SseLayer, SseLayerBody, SseService};
pub use parse::{MessageEvent, ParseError, Parser};
pub use replay::{LastEventId, LastEventIdError, Replay, ReplayError, ReplayLog};

/// The error type that bodies and streams in this crate report: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
