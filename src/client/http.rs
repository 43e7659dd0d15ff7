//! The ready-made transport: hyper-util's client over plain HTTP.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

/// The default transport of an [`EventSource`](super::EventSource): hyper-util's pooled client
/// over plain HTTP/1.1 (`http://` URIs only; for `https://`, build a hyper-util client with a TLS
/// connector and pass it to [`EventSource::with_service`](super::EventSource::with_service)).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new [`HttpClient`] on the tokio runtime. Clone it to share its connection pool between
/// streams.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}
