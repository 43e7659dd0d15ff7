//! `SseLayer` headers over real sockets: event streams get the SSE headers and lose
//! `content-length`; every other response passes through byte for byte, headers unchanged.

mod common;
mod layer_support;

use std::{
    convert::Infallible,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{get, read_body, Proto};
use futures::StreamExt;
use http::{
    header::{CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, DATE},
    HeaderMap, Request, Response,
};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use layer_support::{read_until, serve_service, Timed};
use tower::Layer;
use tower_sse::{BoxError, SseLayer};

/// An app with fixed responses: `/full` (a complete body), `/stream` (a streaming body with a
/// long pause), and `/sse?<content-type>` (a complete event stream with a `content-length`).
fn app() -> impl tower::Service<
    Request<Incoming>,
    Response = Response<BoxBody<Bytes, BoxError>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(|request: Request<Incoming>| async move {
        let response = match request.uri().path() {
            "/full" => Response::builder()
                .header(CONTENT_TYPE, "text/plain")
                .header(CONTENT_LENGTH, "12")
                .header(CACHE_CONTROL, "max-age=60")
                .header("x-custom", "1")
                .body(
                    Full::new(Bytes::from_static(b"hello\n\nworld"))
                        .map_err(Into::into)
                        .boxed(),
                ),
            "/stream" => {
                let frames = futures::stream::iter([b"{\"a\":".as_slice(), b"1}\n\n"]).then(
                    |chunk| async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok::<_, BoxError>(Frame::data(Bytes::from_static(chunk)))
                    },
                );
                Response::builder()
                    .header(CONTENT_TYPE, "application/json")
                    .body(BodyExt::boxed(StreamBody::new(frames)))
            }
            _ => {
                let content_type = request.uri().query().unwrap_or("text/event-stream");
                let mut response = Response::builder()
                    .header(CONTENT_TYPE, content_type.replace("%20", " "))
                    .header(CONTENT_LENGTH, "9");
                if content_type.contains("charset") {
                    response = response
                        .header(CACHE_CONTROL, "no-store")
                        .header("x-accel-buffering", "yes");
                }
                response.body(
                    Full::new(Bytes::from_static(b"data: x\n\n"))
                        .map_err(Into::into)
                        .boxed(),
                )
            }
        };
        Ok::<_, Infallible>(response.unwrap())
    })
}

/// Headers as a sorted list without `date`, which differs from one response to the next.
fn comparable(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut list: Vec<_> = headers
        .iter()
        .filter(|(name, _)| *name != DATE)
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    list.sort();
    list
}

#[tokio::test]
async fn other_responses_pass_through_unchanged() {
    let plain = serve_service(app()).await;
    let layered = serve_service(
        SseLayer::new()
            .keep_alive(Duration::from_millis(50))
            .layer(app()),
    )
    .await;
    for proto in [Proto::Http1, Proto::Http2] {
        for path in ["/full", "/stream"] {
            let (_a, expected) = get(plain, proto, path).await;
            let (_b, actual) = get(layered, proto, path).await;
            assert_eq!(actual.status(), expected.status());
            assert_eq!(
                comparable(actual.headers()),
                comparable(expected.headers()),
                "{proto:?} {path}"
            );
            let (expected, actual) = (
                read_body(expected.into_body()).await,
                read_body(actual.into_body()).await,
            );
            assert!(actual.error.is_none() && expected.error.is_none());
            assert_eq!(actual.bytes, expected.bytes, "{proto:?} {path}");
        }
    }
}

#[tokio::test]
async fn event_streams_get_the_sse_headers() {
    let addr = serve_service(SseLayer::new().layer(app())).await;
    for proto in [Proto::Http1, Proto::Http2] {
        let (_client, response) = get(addr, proto, "/sse").await;
        let headers = response.headers().clone();
        assert_eq!(headers[CONTENT_TYPE], "text/event-stream");
        assert_eq!(headers[CACHE_CONTROL], "no-cache");
        assert_eq!(headers["x-accel-buffering"], "no");
        assert!(!headers.contains_key(CONTENT_LENGTH), "{headers:?}");
        assert!(!headers.contains_key(CONNECTION), "{headers:?}");
        let received = read_body(response.into_body()).await;
        assert!(received.error.is_none());
        assert_eq!(received.text(), "data: x\n\n");
    }
}

#[tokio::test]
async fn headers_the_app_set_are_kept_and_any_case_is_recognised() {
    let addr = serve_service(SseLayer::new().layer(app())).await;
    let (_client, response) = get(
        addr,
        Proto::Http1,
        "/sse?Text/Event-Stream;%20charset=utf-8",
    )
    .await;
    let headers = response.headers();
    assert_eq!(headers[CONTENT_TYPE], "Text/Event-Stream; charset=utf-8");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    assert_eq!(headers["x-accel-buffering"], "yes");
    assert_eq!(headers.get_all(CACHE_CONTROL).iter().count(), 1);
    assert!(!headers.contains_key(CONTENT_LENGTH), "{headers:?}");
}

#[tokio::test]
async fn a_streaming_non_sse_body_gets_no_keep_alives() {
    let addr = serve_service(
        SseLayer::new()
            .keep_alive(Duration::from_millis(20))
            .layer(app()),
    )
    .await;
    let (_client, response) = get(addr, Proto::Http1, "/stream").await;
    let mut body = response.into_body();
    let mut timed = Timed::default();
    let ended = read_until(
        &mut body,
        &mut timed,
        Instant::now() + Duration::from_secs(5),
    )
    .await;
    assert!(ended);
    assert_eq!(timed.bytes(), b"{\"a\":1}\n\n");
}

/// A body that may be sent to another thread but not shared: `Send`, not `Sync`.
struct SendOnlyBody(std::cell::Cell<bool>);

impl http_body::Body for SendOnlyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.set(true); // polled
        std::task::Poll::Ready(None)
    }
}

#[tokio::test]
async fn layer_service_future_and_body_fit_axum_and_hyper() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    fn send_sync_clone_value<T: Send + Sync + Clone>(_: &T) {}
    fn send<T: Send>(_: &T) {}

    send_sync_clone::<SseLayer>();
    send_sync_clone::<tower_sse::SseConnection>();
    let mut service =
        SseLayer::new()
            .on_close(|_| {})
            .layer(tower::service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(SendOnlyBody(std::cell::Cell::new(false))))
            }));
    send_sync_clone_value(&service);
    let future = tower::Service::call(&mut service, Request::new(()));
    send(&future);
    let response = future.await.unwrap();
    send(response.body());
}
