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
