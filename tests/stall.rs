//! Limits against clients that stop reading, over real loopback sockets: hyper stops polling
//! the body of such a client, so only the connection guard can end its stream.

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{Client, Proto};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpSocket, TcpStream},
    task::JoinHandle,
};
use tower::{Layer, Service};
use tower_sse::{
    CloseInfo, CloseReason, Event, SendErrorKind, SseConnection, SseLayer, StallGuard,
};

/// What a producer sends, as fast as it can: 1 KiB of data.
fn payload() -> Event {
    Event::new().data("x".repeat(1024))
}

/// One stream the app served: the handle the layer gave it, and its producer, which ends with
/// the error its first failed `send` returned.
struct Served {
    connection: SseConnection,
    producer: JoinHandle<SendErrorKind>,
}

type ServedList = Arc<Mutex<Vec<Served>>>;
type Seen = Arc<Mutex<Vec<CloseInfo>>>;

/// A layer with the test's limits whose `on_close` records into the returned list.
fn recording(layer: SseLayer) -> (SseLayer, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    (
        layer.on_close(move |info| record.lock().unwrap().push(info)),
        seen,
    )
}

/// The handler: a channel fed by a producer that sends until a send fails.
fn stream(
    served: &ServedList,
    connection: SseConnection,
) -> Response<tower_sse::SseBody<tower_sse::EventReceiver>> {
    let (emitter, body) = tower_sse::channel(16);
    let producer = tokio::spawn(async move {
        loop {
            if let Err(error) = emitter.send(payload()).await {
                return error.kind();
            }
        }
    });
    served.lock().unwrap().push(Served {
        connection,
        producer,
    });
    tower_sse::response(body)
}

/// Serves the streaming app behind `layer` with hyper-util, every connection guarded by
/// `guard` and every request carrying its connection's handle.
async fn serve_guarded(layer: SseLayer, guard: StallGuard) -> (SocketAddr, ServedList) {
    let served: ServedList = Arc::default();
    let app = {
        let served = served.clone();
        layer.layer(tower::service_fn(move |request: Request<Incoming>| {
            let served = served.clone();
            async move {
                let connection = request
                    .extensions()
                    .get::<SseConnection>()
                    .cloned()
                    .unwrap();
                Ok::<_, Infallible>(stream(&served, connection))
            }
        }))
    };
    (serve_app(app, guard).await, served)
}

/// Serves `app` with hyper-util, every connection guarded by `guard` and every request
/// carrying its connection's handle.
async fn serve_app<S>(app: S, guard: StallGuard) -> SocketAddr
where
    S: Service<
            Request<Incoming>,
            Response = Response<
                tower_sse::layer::ResponseBody<tower_sse::SseBody<tower_sse::EventReceiver>>,
            >,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let io = guard.wrap(stream);
            let handle = io.handle();
            let app = app.clone();
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(handle.clone());
                app.clone().call(request)
            });
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(io), service)
                    .into_owned(),
            );
        }
    });
    addr
}

/// An HTTP/1.1 client with a 4 KiB receive buffer that asks for the stream and never reads.
async fn never_reading_http1(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    stream
}

/// Waits until `count` streams were served.
async fn wait_served(served: &ServedList, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while served.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} requests arrived",
            served.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `count` responses were reported to `on_close`, at most `limit`.
async fn wait_reported(seen: &Seen, count: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while seen.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "on_close fired for {} of {count} responses within {limit:?}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every producer's send failed, with the reason its connection and `on_close` report.
async fn assert_one_truth(served: ServedList, seen: &Seen, allowed: &[CloseReason]) {
    let served = std::mem::take(&mut *served.lock().unwrap());
    for (
        i,
        Served {
            connection,
            producer,
        },
    ) in served.into_iter().enumerate()
    {
        let kind = tokio::time::timeout(Duration::from_secs(1), producer)
            .await
            .unwrap_or_else(|_| panic!("producer {i} is still sending"))
            .unwrap();
        let reason = connection.close_reason().expect("the stream is over");
        assert!(allowed.contains(&reason), "stream {i}: {reason:?}");
        assert_eq!(kind, SendErrorKind::Closed(reason), "stream {i}");
    }
    for info in seen.lock().unwrap().iter() {
        assert!(allowed.contains(&info.reason), "{info:?}");
        assert!(info.streaming, "{info:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_never_reading_clients_are_over_within_the_limit_and_the_grace() {
    const MAX_DURATION: Duration = Duration::from_secs(1);
    const GRACE: Duration = Duration::from_secs(1);
    let (layer, seen) = recording(
        SseLayer::new()
            .max_duration(MAX_DURATION)
            .finish_timeout(GRACE),
    );
    let (addr, served) = serve_guarded(layer, StallGuard::new()).await;

    // 50 HTTP/1.1 connections that never read, with a small receive buffer.
    let mut http1 = Vec::new();
    for _ in 0..50 {
        http1.push(never_reading_http1(addr).await);
    }
    // 50 HTTP/2 streams on one connection whose bodies are never polled: the client's
    // connection task keeps reading frames, but no window is released.
    let mut http2 = Client::connect(addr, Proto::Http2).await;
    let mut bodies = Vec::new();
    for _ in 0..50 {
        bodies.push(http2.get("/events").await.into_body());
    }
    wait_served(&served, 100).await;

    wait_reported(&seen, 100, MAX_DURATION + GRACE + Duration::from_secs(2)).await;
    let limit = MAX_DURATION + GRACE + Duration::from_secs(2);
    for info in seen.lock().unwrap().iter() {
        assert!(info.duration <= limit, "{info:?}");
    }
    assert_one_truth(
        served,
        &seen,
        &[CloseReason::Stalled, CloseReason::TimedOut],
    )
    .await;
    drop((http1, bodies, http2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_makes_no_progress_closes_the_connection() {
    // No time limit on the stream: only the write timeout can end it.
    let (layer, seen) = recording(SseLayer::new());
    let guard = StallGuard::new().write_timeout(Duration::from_millis(500));
    let (addr, served) = serve_guarded(layer, guard.clone()).await;
    let client = never_reading_http1(addr).await;
    wait_served(&served, 1).await;
    wait_reported(&seen, 1, Duration::from_secs(5)).await;
    assert_eq!(seen.lock().unwrap()[0].reason, CloseReason::Stalled);
    assert_one_truth(served, &seen, &[CloseReason::Stalled]).await;
    // The connection is gone from the guard too.
    tokio::time::timeout(Duration::from_secs(1), guard.all_closed())
        .await
        .expect("the guard still counts the connection");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_client_is_not_stalled_by_a_short_write_timeout() {
    let (layer, seen) = recording(SseLayer::new().max_duration(Duration::from_millis(800)));
    let guard = StallGuard::new().write_timeout(Duration::from_millis(200));
    let (addr, _served) = serve_guarded(layer, guard).await;
    let (_client, response) = common::get(addr, Proto::Http1, "/events").await;
    // Reads as fast as it can while the producer sends faster still: the server's writes keep
    // waiting for room, briefly, many times.
    let mut body = response.into_body();
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        bytes += frame
            .unwrap()
            .into_data()
            .map_or(0, |data: Bytes| data.len());
    }
    assert!(bytes > 0);
    wait_reported(&seen, 1, Duration::from_secs(5)).await;
    assert_eq!(seen.lock().unwrap()[0].reason, CloseReason::TimedOut);
}

#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_serve_with_a_guarded_listener_ends_stalled_streams() {
    use axum::{routing::get as route_get, Router};
    use std::future::IntoFuture;
    use tower_sse::ConnectionHandle;

    const MAX_DURATION: Duration = Duration::from_millis(500);
    const GRACE: Duration = Duration::from_millis(500);
    let (layer, seen) = recording(
        SseLayer::new()
            .max_duration(MAX_DURATION)
            .finish_timeout(GRACE),
    );
    let served: ServedList = Arc::default();
    let app = {
        let served = served.clone();
        Router::new()
            .route(
                "/events",
                route_get(move |connection: SseConnection| {
                    let served = served.clone();
                    async move { stream(&served, connection) }
                }),
            )
            .layer(layer)
    };
    // A stream that ended cleanly may leave its last bytes unflushed to a client that never
    // reads: the write timeout closes such a connection.
    let guard = StallGuard::new().write_timeout(Duration::from_secs(1));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        axum::serve(
            guard.listener(listener),
            app.into_make_service_with_connect_info::<ConnectionHandle>(),
        )
        .into_future(),
    );

    let mut http1 = Vec::new();
    for _ in 0..5 {
        http1.push(never_reading_http1(addr).await);
    }
    let mut http2 = Client::connect(addr, Proto::Http2).await;
    let mut bodies = Vec::new();
    for _ in 0..5 {
        bodies.push(http2.get("/events").await.into_body());
    }
    wait_served(&served, 10).await;
    wait_reported(&seen, 10, MAX_DURATION + GRACE + Duration::from_secs(2)).await;
    assert_one_truth(
        served,
        &seen,
        &[CloseReason::Stalled, CloseReason::TimedOut],
    )
    .await;
    // The write timeout (1 s), with room for a loaded machine.
    tokio::time::timeout(
        Duration::from_secs(1) + Duration::from_secs(5),
        guard.all_closed(),
    )
    .await
    .expect("stalled connections are closed");
    drop((http1, bodies, http2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_channel_timeout_ends_a_stream_hyper_no_longer_polls() {
    // No `max_duration`: the channel's own timeout is the limit, and the guard learns it
    // through the link.
    const TIMEOUT: Duration = Duration::from_millis(500);
    const GRACE: Duration = Duration::from_millis(500);
    let (layer, seen) = recording(SseLayer::new().finish_timeout(GRACE));
    let served: ServedList = Arc::default();
    let app = {
        let served = served.clone();
        layer.layer(tower::service_fn(move |request: Request<Incoming>| {
            let served = served.clone();
            async move {
                let connection = request
                    .extensions()
                    .get::<SseConnection>()
                    .cloned()
                    .unwrap();
                let (emitter, body) = tower_sse::ChannelBuilder::new(16).timeout(TIMEOUT).build();
                let producer = tokio::spawn(async move {
                    loop {
                        if let Err(error) = emitter.send(payload()).await {
                            return error.kind();
                        }
                    }
                });
                served.lock().unwrap().push(Served {
                    connection,
                    producer,
                });
                Ok::<_, Infallible>(tower_sse::response(body))
            }
        }))
    };
    let addr = serve_app(app, StallGuard::new()).await;
    let mut http2 = Client::connect(addr, Proto::Http2).await;
    let mut bodies = Vec::new();
    for _ in 0..20 {
        bodies.push(http2.get("/events").await.into_body());
    }
    wait_served(&served, 20).await;
    wait_reported(&seen, 20, TIMEOUT + GRACE + Duration::from_secs(2)).await;
    assert_one_truth(
        served,
        &seen,
        &[CloseReason::Stalled, CloseReason::TimedOut],
    )
    .await;
    drop((bodies, http2));
}

/// A connection that stops reading once told to: its reads stay pending for good, so the
/// peer's writes fill the socket.
struct StopReading {
    io: TcpStream,
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

impl tokio::io::AsyncRead for StopReading {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for StopReading {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_socket_that_fills_up_is_closed_by_the_write_timeout() {
    // Flow control would never stall this stream (huge windows); the client stops reading the
    // socket altogether, so the server's writes stop making progress.
    let (layer, seen) = recording(SseLayer::new());
    let guard = StallGuard::new().write_timeout(Duration::from_millis(500));
    let (addr, served) = serve_guarded(layer, guard).await;
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let io = StopReading {
        io: TcpStream::connect(addr).await.unwrap(),
        stopped: stopped.clone(),
    };
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1 << 30)
        .initial_connection_window_size(1 << 30)
        .handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get("/events")
        .header("host", "127.0.0.1")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    stopped.store(true, std::sync::atomic::Ordering::Relaxed);
    wait_served(&served, 1).await;
    wait_reported(&seen, 1, Duration::from_secs(10)).await;
    assert_one_truth(served, &seen, &[CloseReason::Stalled]).await;
    drop((response, send));
}
