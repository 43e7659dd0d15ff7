//! [`ClientError`]: why an event stream could not be opened or read.

use std::{fmt, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, StatusCode, Uri};

use crate::BoxError;

/// Why an [`EventSource`](super::EventSource) stream failed.
///
/// [`is_retryable`](ClientError::is_retryable) tells which failures the stream reconnects after
/// (when its request may be sent again); the others end the stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with a status other than `2xx` (`204 No Content` is not an error:
    /// it ends the stream). `5xx` is retried; `4xx` and the rest are final.
    Status {
        /// The response status.
        status: StatusCode,
        /// The response's `content-type`, if it had one.
        content_type: Option<HeaderValue>,
        /// The start of the response body (at most [`ERROR_BODY_PREFIX`](super::ERROR_BODY_PREFIX)
        /// bytes), such as an HTML error page or a JSON error.
        body: Bytes,
    },
    /// The server answered `2xx` with a content type other than `text/event-stream` (or none):
    /// not an event stream, so it is not read as one and not retried.
    ContentType {
        /// The response status.
        status: StatusCode,
        /// The response's `content-type`, if it had one.
        content_type: Option<HeaderValue>,
        /// The start of the response body (at most [`ERROR_BODY_PREFIX`](super::ERROR_BODY_PREFIX)
        /// bytes).
        body: Bytes,
    },
    /// The request could not be sent or the response body failed (connection refused or reset,
    /// a stream cut in the middle of a chunk): retried.
    Transport(BoxError),
    /// No byte (not even a keep-alive comment) arrived for this long: retried.
    IdleTimeout(Duration),
    /// An event (or a line) grew past the stream's maximum event size, in bytes: final.
    EventTooLarge(usize),
    /// The stream's last event ID cannot be sent as a `Last-Event-ID` header (it holds a
    /// control character), so the stream cannot resume where it stopped: final.
    InvalidLastEventId(String),
    /// The default [`HttpClient`](super::HttpClient) cannot send to this URI: it speaks plain
    /// HTTP to absolute `http://` URIs only (for `https://`, pass a client with a TLS
    /// connector to [`EventSource::with_service`](super::EventSource::with_service)): final.
    UnsupportedUri(Uri),
}

impl ClientError {
    /// Whether the stream reconnects after this failure (when its request may be sent again):
    /// transport failures, idle timeouts and `5xx` statuses.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Status { status, .. } => status.is_server_error(),
            ClientError::Transport(_) | ClientError::IdleTimeout(_) => true,
            ClientError::ContentType { .. }
            | ClientError::EventTooLarge(_)
            | ClientError::InvalidLastEventId(_)
            | ClientError::UnsupportedUri(_) => false,
        }
    }

    /// The response status, for the errors that come with one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } | ClientError::ContentType { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Status {
                status,
                content_type,
                body,
            } => {
                write!(f, "the event stream was refused with status {status}")?;
                describe_body(f, content_type.as_ref(), body)
            }
            ClientError::ContentType {
                status,
                content_type,
                body,
            } => {
                match content_type {
                    Some(value) => write!(
                        f,
                        "expected `content-type: text/event-stream`, got {value:?}"
                    )?,
                    None => f.write_str("expected `content-type: text/event-stream`, got none")?,
                }
                write!(f, " (status {status})")?;
                describe_body(f, None, body)
            }
            ClientError::Transport(error) => write!(f, "the event stream failed: {error}"),
            ClientError::IdleTimeout(after) => {
                write!(f, "no bytes arrived on the event stream for {after:?}")
            }
            ClientError::EventTooLarge(limit) => write!(
                f,
                "an event on the stream grew past the maximum event size of {limit} bytes"
            ),
            ClientError::InvalidLastEventId(id) => write!(
                f,
                "the last event ID {id:?} cannot be sent in a `Last-Event-ID` header, \
                 so the stream cannot resume"
            ),
            ClientError::UnsupportedUri(uri) => write!(
                f,
                "the built-in HTTP client sends to absolute http:// URIs only, not {uri:?}; \
                 for https://, use EventSource::with_service with a TLS-capable client"
            ),
        }
    }
}

/// Appends the content type and the start of an error body to a message.
fn describe_body(
    f: &mut fmt::Formatter<'_>,
    content_type: Option<&HeaderValue>,
    body: &Bytes,
) -> fmt::Result {
    if let Some(value) = content_type {
        write!(f, " ({value:?})")?;
    }
    if !body.is_empty() {
        write!(f, ": {}", String::from_utf8_lossy(body))?;
    }
    Ok(())
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Transport(error) => Some(&**error),
            _ => None,
        }
    }
}
