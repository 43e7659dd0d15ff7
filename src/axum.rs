//! axum glue, behind the `axum` feature: responses and extractors.

use axum::response::{IntoResponse, Response};
use futures::Stream;

use crate::{BoxError, Event, SseBody};

impl<S, E> IntoResponse for SseBody<S>
where
    S: Stream<Item = Result<Event, E>> + Send + 'static,
    E: Into<BoxError>,
{
    /// A `200 OK` event-stream response, with the headers of [`crate::response`].
    fn into_response(self) -> Response {
        crate::response(axum::body::Body::new(self))
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
