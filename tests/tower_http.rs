//! `SseLayer` stacked with tower-http's usual middlewares, in the orders people write them, over
//! real sockets (axum::serve on 127.0.0.1:0, HTTP/1.1 and HTTP/2):
//!
//! * the stack compiles (TimeoutLayer outside SseLayer needs `layer::ResponseBody: Default`);
//! * CompressionLayer leaves the stream uncompressed and progressive: the first event and a
//!   keep-alive arrive while the producer waits for the client to have seen them;
//! * TimeoutLayer bounds the time to the response, not the stream: the stream outlives it
//!   several times and ends cleanly, while a handler slower than it gets its 408;
//! * TraceLayer sees every chunk up to the final event, its `on_eos` hook fires when the stream
//!   ends and its request span closes; CorsLayer's and RequestBodyLimitLayer's answers hold.
//!
//! `on_eos` waits for the body's `None`, which hyper never asks for once a body reports
//! `is_end_stream()` with its last frame: the crate's bodies report their end only after they
//! handed over `None`, so it fires with SseLayer in any place, and without SseLayer around a
//! channel's body.
#![cfg(feature = "axum")]

use std::{future::IntoFuture, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::State,
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, Notify},
    time::{timeout, Instant},
};
use tower::ServiceBuilder;
use tower_http::{
    compression::CompressionLayer,
    cors::CorsLayer,
    limit::RequestBodyLimitLayer,
    timeout::TimeoutLayer,
    trace::{
        DefaultMakeSpan, DefaultOnRequest, DefaultOnResponse, HttpMakeClassifier, OnBodyChunk,
        OnEos, TraceLayer,
    },
};
use tower_sse::{Event, EventName, SseConnection, SseLayer};
use tracing_subscriber::layer::SubscriberExt;

/// TimeoutLayer's limit: short, so the stream outlives it several times over.
const TIMEOUT: Duration = Duration::from_millis(100);
/// SseLayer's keep-alive interval: short, so a keep-alive comes while the producer waits.
const KEEP_ALIVE: Duration = Duration::from_millis(50);
/// RequestBodyLimitLayer's limit.
const BODY_LIMIT: usize = 64;
/// How long any step may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

const DONE: EventName = EventName::new("done");

/// What the test and the server share: the producer's go signal, the chunks TraceLayer saw and
/// the ends of stream it saw.
#[derive(Clone)]
struct Probe {
    go: Arc<Notify>,
    chunks: mpsc::UnboundedSender<Bytes>,
    ends: mpsc::UnboundedSender<()>,
}

/// TraceLayer with `on_body_chunk` and `on_eos` hooks that tell the test.
type Trace = TraceLayer<
    HttpMakeClassifier,
    DefaultMakeSpan,
    DefaultOnRequest,
    DefaultOnResponse,
    RecordChunks,
    RecordEos,
>;

#[derive(Clone)]
struct RecordChunks(mpsc::UnboundedSender<Bytes>);

impl OnBodyChunk<Bytes> for RecordChunks {
    fn on_body_chunk(&mut self, chunk: &Bytes, _: Duration, _: &tracing::Span) {
        let _ = self.0.send(chunk.clone());
    }
}

#[derive(Clone)]
struct RecordEos(mpsc::UnboundedSender<()>);

impl OnEos for RecordEos {
    fn on_eos(self, _: Option<&http::HeaderMap>, _: Duration, _: &tracing::Span) {
        let _ = self.0.send(());
    }
}

fn trace(probe: &Probe) -> Trace {
    TraceLayer::new_for_http()
        .on_body_chunk(RecordChunks(probe.chunks.clone()))
        .on_eos(RecordEos(probe.ends.clone()))
}

/// Reports every TraceLayer span (named `request`) that closes. `#[tokio::test]` runs the server and the
/// client on the test's thread, so a thread-local subscriber sees TraceLayer's spans.
struct SpanCloses(mpsc::UnboundedSender<&'static str>);

impl<S> tracing_subscriber::Layer<S> for SpanCloses
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        if let Some(span) = ctx.span(&id).filter(|span| span.name() == "request") {
            let _ = self.0.send(span.name());
        }
    }
}

fn compression(_: &Probe) -> CompressionLayer {
    CompressionLayer::new()
}

fn timeout_layer(_: &Probe) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, TIMEOUT)
}

fn cors(_: &Probe) -> CorsLayer {
    CorsLayer::permissive()
}

fn limit(_: &Probe) -> RequestBodyLimitLayer {
    RequestBodyLimitLayer::new(BODY_LIMIT)
}

fn sse(_: &Probe) -> SseLayer {
    SseLayer::new().keep_alive(KEEP_ALIVE)
}

/// `GET /stream`: one event, then (once the test says so) a final `done` event. `GET /slow`
/// answers after 30 s, far beyond the timeout. `POST /echo` reads its body.
fn app(probe: &Probe) -> Router {
    Router::new()
        .route("/stream", get(stream))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }),
        )
        .route("/echo", post(|body: String| async move { body }))
        .with_state(probe.clone())
}

async fn stream(
    connection: SseConnection,
    State(probe): State<Probe>,
) -> impl axum::response::IntoResponse {
    let (emitter, body) = tower_sse::channel(4);
    tokio::spawn(async move {
        let _ = emitter.send("one").await;
        tokio::select! {
            _ = probe.go.notified() => {}
            _ = connection.closed() => return,
        }
        let _ = emitter
            .send(Event::new().event_name(DONE).data("two"))
            .await;
        emitter.complete();
    });
    body
}

/// One HTTP/1.1 or HTTP/2 connection, with the request headers a browser would send.
async fn request(
    addr: SocketAddr,
    http2: bool,
    request: Request<Full<Bytes>>,
) -> http::Response<Incoming> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    if http2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(request).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(request).await.unwrap()
    }
}

fn get_request(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(header::HOST, "127.0.0.1")
        .header(header::ACCEPT_ENCODING, "gzip, br, zstd, deflate")
        .header(header::ORIGIN, "http://page.test")
        .body(Full::default())
        .unwrap()
}

/// Reads frames into `received` until it ends with `suffix`.
async fn read_until(body: &mut Incoming, received: &mut Vec<u8>, suffix: &[u8]) {
    let read = async {
        while !received.ends_with(suffix) {
            let frame = body.frame().await.expect("the stream ended early").unwrap();
            received.extend_from_slice(&frame.into_data().unwrap_or_default());
        }
    };
    timeout(PATIENCE, read).await.unwrap_or_else(|_| {
        panic!(
            "{suffix:?} did not arrive within {PATIENCE:?}; received {:?}",
            String::from_utf8_lossy(received)
        )
    });
}

async fn check(stack_name: &str, make: impl Fn(&Probe) -> Router) {
    for http2 in [false, true] {
        let context = format!(
            "{stack_name} over {}",
            if http2 { "HTTP/2" } else { "HTTP/1.1" }
        );
        let (chunks_tx, mut chunks) = mpsc::unbounded_channel();
        let (ends_tx, mut ends) = mpsc::unbounded_channel();
        let probe = Probe {
            go: Arc::new(Notify::new()),
            chunks: chunks_tx,
            ends: ends_tx,
        };
        let (closes_tx, mut closes) = mpsc::unbounded_channel();
        let subscriber = tracing_subscriber::registry().with(SpanCloses(closes_tx));
        let _subscriber = tracing::subscriber::set_default(subscriber);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(axum::serve(listener, make(&probe)).into_future());

        let started = Instant::now();
        let response = request(addr, http2, get_request("/stream")).await;
        assert_eq!(response.status(), StatusCode::OK, "{context}");
        let headers = response.headers();
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/event-stream",
            "{context}"
        );
        assert_eq!(
            headers.get(header::CONTENT_ENCODING),
            None,
            "{context}: compressed"
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{context}");
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "*",
            "{context}"
        );

        // Progressive: the event and a keep-alive arrive while the producer still waits.
        let mut body = response.into_body();
        let mut received = Vec::new();
        read_until(&mut body, &mut received, b"data: one\n\n").await;
        read_until(&mut body, &mut received, b"\n:\n").await;
        // The stream outlives the timeout several times over before it goes on.
        tokio::time::sleep_until(started + TIMEOUT * 4).await;
        probe.go.notify_one();
        read_until(&mut body, &mut received, b"event: done\ndata: two\n\n").await;
        // The end: over HTTP/2 it may come as an empty DATA frame that carries END_STREAM.
        let end = timeout(PATIENCE, async {
            loop {
                match body.frame().await {
                    Some(Ok(frame)) if frame.data_ref().is_some_and(|data| data.is_empty()) => {}
                    end => return end,
                }
            }
        })
        .await
        .expect("no end after done");
        assert!(
            end.is_none(),
            "{context}: the stream did not end cleanly: {end:?}"
        );
        assert!(
            received.starts_with(b"data: one\n\n:\n"),
            "{context}: {:?}",
            String::from_utf8_lossy(&received)
        );
        // TraceLayer saw the stream up to its final event, and closed its span at the end.
        let mut traced = Vec::new();
        while let Ok(chunk) = chunks.try_recv() {
            traced.extend_from_slice(&chunk);
        }
        // (Inside SseLayer, it sees the stream without the keep-alives.)
        assert!(
            traced.starts_with(b"data: one\n\n") && traced.ends_with(b"event: done\ndata: two\n\n"),
            "{context}: TraceLayer saw {:?}",
            String::from_utf8_lossy(&traced)
        );
        let end = timeout(PATIENCE, ends.recv()).await;
        assert_eq!(
            end,
            Ok(Some(())),
            "{context}: TraceLayer's on_eos did not fire"
        );
        let closed = timeout(PATIENCE, closes.recv()).await;
        assert_eq!(
            closed,
            Ok(Some("request")),
            "{context}: TraceLayer's span did not close"
        );

        // TimeoutLayer still answers for a handler slower than it.
        let slow = timeout(PATIENCE, request(addr, http2, get_request("/slow")))
            .await
            .unwrap_or_else(|_| panic!("{context}: no 408 from TimeoutLayer"));
        assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT, "{context}");

        // RequestBodyLimitLayer still refuses a large body, with a status the client reads.
        let large = Request::post("/echo")
            .header(header::HOST, "127.0.0.1")
            .body(Full::new(Bytes::from(vec![b'x'; BODY_LIMIT * 4])))
            .unwrap();
        let large = request(addr, http2, large).await;
        assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE, "{context}");
        let small = Request::post("/echo")
            .header(header::HOST, "127.0.0.1")
            .header(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))
            .body(Full::new(Bytes::from_static(b"small")))
            .unwrap();
        let small = request(addr, http2, small).await;
        assert_eq!(small.status(), StatusCode::OK, "{context}");
        let echoed = small.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&echoed[..], b"small", "{context}");

        server.abort();
    }
}

/// A test per order: the layers listed outermost first, as `ServiceBuilder` reads them.
///
/// CorsLayer and TimeoutLayer answer some requests themselves with `B::default()`, so they sit
/// inside TraceLayer and RequestBodyLimitLayer, whose bodies have no `Default`: a tower-http
/// rule, whatever SseLayer does. Every other order of the six is tested.
macro_rules! order {
    ($($name:ident: $($layer:ident),+;)+) => {$(
        #[tokio::test]
        async fn $name() {
            check(stringify!($($layer),+), |probe| {
                app(probe).layer(ServiceBuilder::new()$(.layer($layer(probe)))+)
            })
            .await;
        }
    )+};
}

order! {
    // The order the README recommends: SseLayer innermost, next to the handlers.
    trace_limit_cors_timeout_compression_sse: trace, limit, cors, timeout_layer, compression, sse;
    trace_compression_limit_timeout_sse_cors: trace, compression, limit, timeout_layer, sse, cors;
    trace_compression_limit_timeout_cors_sse: trace, compression, limit, timeout_layer, cors, sse;
    sse_trace_limit_cors_compression_timeout: sse, trace, limit, cors, compression, timeout_layer;
    trace_sse_compression_limit_timeout_cors: trace, sse, compression, limit, timeout_layer, cors;
    compression_trace_sse_limit_cors_timeout: compression, trace, sse, limit, cors, timeout_layer;
    limit_trace_sse_cors_timeout_compression: limit, trace, sse, cors, timeout_layer, compression;
}

/// Without SseLayer, TraceLayer sits right around the handler's body: a channel's body hands
/// `on_eos` its end too.
#[tokio::test]
async fn trace_alone_sees_the_end_of_a_channel() {
    for http2 in [false, true] {
        let context = if http2 { "HTTP/2" } else { "HTTP/1.1" };
        let (chunks_tx, mut chunks) = mpsc::unbounded_channel();
        let (ends_tx, mut ends) = mpsc::unbounded_channel();
        let probe = Probe {
            go: Arc::new(Notify::new()),
            chunks: chunks_tx,
            ends: ends_tx,
        };
        let app = Router::new()
            .route(
                "/stream",
                get(|| async {
                    let (emitter, body) = tower_sse::channel(4);
                    tokio::spawn(async move {
                        let _ = emitter.send("one").await;
                        let _ = emitter
                            .send(Event::new().event_name(DONE).data("two"))
                            .await;
                        emitter.complete();
                    });
                    body
                }),
            )
            .layer(trace(&probe));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(axum::serve(listener, app).into_future());

        let response = request(addr, http2, get_request("/stream")).await;
        assert_eq!(response.status(), StatusCode::OK, "{context}");
        let received = timeout(PATIENCE, response.into_body().collect())
            .await
            .expect("the stream did not end")
            .unwrap()
            .to_bytes();
        assert_eq!(
            &received[..],
            b"data: one\n\nevent: done\ndata: two\n\n",
            "{context}"
        );
        let end = timeout(PATIENCE, ends.recv()).await;
        assert_eq!(
            end,
            Ok(Some(())),
            "{context}: TraceLayer's on_eos did not fire"
        );
        let mut traced = Vec::new();
        while let Ok(chunk) = chunks.try_recv() {
            traced.extend_from_slice(&chunk);
        }
        assert_eq!(traced, received, "{context}: TraceLayer saw other chunks");
        server.abort();
    }
}
