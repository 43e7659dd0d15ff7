//! axum glue, behind the `axum` feature: responses and extractors.

use axum::response::{IntoResponse, Response};
use futures::Stream;

use crate::{framing::Encode, BoxError, FramedBody};

impl<F, S, T, E> IntoResponse for FramedBody<F, S>
where
    F: Encode<T>,
    S: Stream<Item = Result<T, E>> + Send + 'static,
    E: Into<BoxError>,
{
    /// A `200 OK` streaming response with the framing's content type and the headers of
    /// [`crate::framed_response`] (`text/event-stream` for an [`SseBody`](crate::SseBody)).
    fn into_response(self) -> Response {
        crate::body::streaming_response(F::CONTENT_TYPE, axum::body::Body::new(self))
    }
}

/// Extracts the [`SseConnection`](crate::SseConnection) that [`SseLayer`](crate::SseLayer) put
/// into the request; without the layer, the request fails with `500 Internal Server Error`.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for crate::SseConnection {
    type Rejection = (http::StatusCode, &'static str);

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or((
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "SseConnection needs SseLayer around the handler",
        ))
    }
}

/// Extracts `Option<SseConnection>`: the handle when [`SseLayer`](crate::SseLayer) is around the
/// handler, `None` when it is not; it never fails, so a handler can serve with or without the
/// layer.
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for crate::SseConnection {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}

/// Extracts the client's `Last-Event-ID`; a request without one is rejected with
/// `400 Bad Request`. Take `Option<LastEventId>` to accept requests without it.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for crate::LastEventId {
    type Rejection = crate::LastEventIdError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Self::from_headers(&parts.headers)?.ok_or(crate::LastEventIdError::Missing)
    }
}

/// Extracts `Option<LastEventId>`: `None` without the header, and `400 Bad Request` for a
/// malformed one.
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for crate::LastEventId {
    type Rejection = crate::LastEventIdError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Self::from_headers(&parts.headers)
    }
}

impl IntoResponse for crate::LastEventIdError {
    /// `400 Bad Request`, with the reason as plain text.
    fn into_response(self) -> Response {
        (http::StatusCode::BAD_REQUEST, self.to_string()).into_response()
    }
}
