//! What a response must be for its body to be read as an event stream.

use std::{future::poll_fn, pin::pin, time::Duration};

use bytes::{Buf, Bytes, BytesMut};
use http::{header, response::Parts, HeaderValue, StatusCode};
use http_body::Body;

use super::ClientError;

/// How many bytes of a refused response's body an error keeps.
pub const ERROR_BODY_PREFIX: usize = 1024;

/// How long a refused response's body may take to deliver its start.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(5);

/// What a response means for the stream.
pub(crate) enum Verdict<B> {
    /// `2xx` with `content-type: text/event-stream`: read the body.
    Stream(Parts, B),
    /// `204 No Content`: the server says stop.
    Stop,
}

/// Checks the response as `fetch-event-source`'s `onopen` should: `204` stops, any other
/// non-`2xx` status or a content type other than `text/event-stream` is an error carrying
/// the status, the content type and the start of the body.
pub(crate) async fn check<B>(parts: Parts, body: B) -> Result<Verdict<B>, ClientError>
where
    B: Body,
{
    if parts.status == StatusCode::NO_CONTENT {
        return Ok(Verdict::Stop);
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    if parts.status.is_success() && content_type.is_some_and(is_event_stream) {
        return Ok(Verdict::Stream(parts, body));
    }
    let content_type = content_type.cloned();
    let status = parts.status;
    let body = body_start(body).await;
    Err(if status.is_success() {
        ClientError::ContentType {
            status,
            content_type,
            body,
        }
    } else {
        ClientError::Status {
            status,
            content_type,
            body,
        }
    })
}

/// `text/event-stream`, in any case, with or without parameters.
fn is_event_stream(value: &HeaderValue) -> bool {
    value
        .to_str()
        .ok()
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Up to [`ERROR_BODY_PREFIX`] bytes from the start of `body`: whatever arrived before it ended,
/// failed or went quiet for [`ERROR_BODY_WAIT`].
async fn body_start<B: Body>(body: B) -> Bytes {
    let mut body = pin!(body);
    let mut start = BytesMut::new();
    let read = async {
        while start.len() < ERROR_BODY_PREFIX {
            match poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() && start.len() < ERROR_BODY_PREFIX {
                            let chunk = data.chunk();
                            let take = chunk.len().min(ERROR_BODY_PREFIX - start.len());
                            start.extend_from_slice(&chunk[..take]);
                            data.advance(take);
                        }
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
    };
    let _ = tokio::time::timeout(ERROR_BODY_WAIT, read).await;
    start.freeze()
}
