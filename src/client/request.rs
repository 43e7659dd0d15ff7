//! The request an event stream is opened with, kept so that it can be sent again on reconnect,
//! and the policy saying whether it may be.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Uri, Version};

use super::ClientError;

/// Whether a stream sends its request again after the connection fails or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reconnect {
    /// Reconnect only when sending the request again cannot repeat an action: an idempotent
    /// method (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`, `TRACE`) with an empty body. A `POST`,
    /// or any request with a body, is sent once, so a gateway never starts a second generation
    /// by accident: its stream ends with the error (or cleanly) instead.
    #[default]
    IfIdempotent,
    /// Always reconnect, bodies and non-idempotent methods included: for servers that resume a
    /// `POST` by its `Last-Event-ID`.
    Always,
    /// Never reconnect: the stream ends when its one response does.
    Never,
}

/// The parts of the request kept for sending it again.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Template {
    pub(crate) fn new(request: Request<Bytes>) -> Template {
        let (parts, body) = request.into_parts();
        let mut headers = parts.headers;
        headers
            .entry(header::ACCEPT)
            .or_insert(HeaderValue::from_static("text/event-stream"));
        Template {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers,
            body,
        }
    }

    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Whether the URI is absolute and `http://`.
    pub(crate) fn is_absolute_http(&self) -> bool {
        self.uri.scheme_str() == Some("http") && self.uri.authority().is_some()
    }

    /// Whether `policy` lets this request be sent more than once.
    pub(crate) fn may_resend(&self, policy: Reconnect) -> bool {
        match policy {
            Reconnect::IfIdempotent => self.method.is_idempotent() && self.body.is_empty(),
            Reconnect::Always => true,
            Reconnect::Never => false,
        }
    }

    /// The request to send, with `Last-Event-ID: last_event_id` unless it is empty, and the
    /// body in the service's own type.
    pub(crate) fn build<Q: From<Bytes>>(
        &self,
        last_event_id: &str,
    ) -> Result<Request<Q>, ClientError> {
        let mut request = Request::new(Q::from(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        if !last_event_id.is_empty() {
            let value = HeaderValue::from_str(last_event_id)
                .map_err(|_| ClientError::InvalidLastEventId(last_event_id.to_owned()))?;
            request
                .headers_mut()
                .insert(header::HeaderName::from_static("last-event-id"), value);
        }
        Ok(request)
    }
}
