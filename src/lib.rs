//! Server-Sent Events as a first-class streaming response for hyper, tower and axum.
//!
//! * [`Event`] builds one event straight into its exact wire form, and refuses input that
//!   would inject lines with a typed [`EventError`].
//! * [`Parser`] decodes an event stream exactly as a browser's `EventSource` does.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod close;
mod event;

pub use close::CloseReason;
pub use event::{Event, EventError, EventField};

/// The error type that bodies and streams in this crate report: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
