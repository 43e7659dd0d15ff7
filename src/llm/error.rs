//! [`StreamError`]: why a protocol writer refused a call or could not send.

use std::fmt;

use crate::{EventError, SendError};

/// Why a call on a protocol writer ([`ChatCompletionStream`](super::ChatCompletionStream),
/// [`ResponseStream`](super::ResponseStream), [`MessageStream`](super::MessageStream)) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamError {
    /// The protocol does not allow this call now (a delta before the start, anything after
    /// the terminal event...): nothing was written and the writer is unchanged.
    OutOfOrder {
        /// The call that was refused.
        call: &'static str,
        /// Why it is not allowed now.
        reason: &'static str,
    },
    /// Your content could not be serialised as JSON (or as the object the protocol needs
    /// there): nothing was written and the writer is unchanged.
    Encode(EventError),
    /// The stream takes no more events (the client went away, the stream was ended, ...).
    Closed(SendError),
}

impl StreamError {
    pub(crate) fn out_of_order(call: &'static str, reason: &'static str) -> Self {
        StreamError::OutOfOrder { call, reason }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::OutOfOrder { call, reason } => {
                write!(f, "`{call}` is not allowed now: {reason}")
            }
            StreamError::Encode(error) => write!(f, "content not written: {error}"),
            StreamError::Closed(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamError::OutOfOrder { .. } => None,
            StreamError::Encode(error) => Some(error),
            StreamError::Closed(error) => Some(error),
        }
    }
}

impl From<EventError> for StreamError {
    fn from(error: EventError) -> Self {
        StreamError::Encode(error)
    }
}

impl From<SendError> for StreamError {
    fn from(error: SendError) -> Self {
        StreamError::Closed(error)
    }
}
