//! Both examples under SIGTERM with clients that never read: each process exits 0 within its
//! shutdown grace plus 2 s, and clients that were reading get the shutdown event and a clean
//! end.
//!
//! The example binaries are built first by `cargo build --examples` (a no-op when they are
//! fresh) and run as real processes on free ports.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{examples_dir, read_body, Proto, EXAMPLES};
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpSocket, TcpStream},
    task::JoinHandle,
};

/// The grace the examples get in this test (`SHUTDOWN_GRACE_MS`).
const GRACE: Duration = Duration::from_secs(1);

/// What the examples write last on every stream they end for a shutdown.
const EXAMPLE_SHUTDOWN_EVENT: &str = "event: shutdown\ndata: the server is shutting down\n\n";

/// What this file's own servers write last on every stream they end for a shutdown.
const SHUTDOWN_EVENT: &str = "event: shutdown\ndata: \"\"\n\n";

/// Starts an example on a free port; returns the process and its address.
fn start(name: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(examples_dir().join(name))
        .env("PORT", "0")
        .env("GPT_DELAY_MS", "0")
        .env("EVENTS_INTERVAL_MS", "10")
        .env("SHUTDOWN_GRACE_MS", GRACE.as_millis().to_string())
        .env(
            "RUST_LOG",
            "warn,gpt_stream_axum=info,gpt_stream_hyper=info",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{name}: {err}"));
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "{name} exited");
        if let Some(at) = line.find("listening on http://") {
            break line[at + "listening on http://".len()..]
                .trim()
                .parse()
                .unwrap();
        }
    };
    // Keep draining the log, so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines() {});
    (child, addr)
}

/// A long answer: the stand-in model streams one event per character, as fast as it can.
fn long_query() -> String {
    serde_json::json!({ "query": "x".repeat(60_000) }).to_string()
}

/// An HTTP/1.1 client with a 4 KiB receive buffer that asks for ten long answers in a row
/// (pipelined: more than the socket buffers hold) and never reads. The task writing the
/// requests holds the connection open until it is aborted.
async fn never_reading_http1(addr: SocketAddr) -> JoinHandle<()> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let body = long_query();
    let request = format!(
        "POST /gpt-stream HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        for _ in 0..10 {
            if stream.write_all(request.as_bytes()).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    })
}

/// Sends SIGTERM to the process.
fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the process to exit, at most `limit`; returns its exit status.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running {limit:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_each_example_within_the_grace_despite_never_reading_clients() {
    for name in EXAMPLES {
        let (mut child, addr) = start(name);

        // 50 HTTP/1.1 clients that never read.
        let mut stalled = Vec::new();
        for _ in 0..50 {
            stalled.push(never_reading_http1(addr).await);
        }
        // 50 HTTP/2 streams on one connection, never polled.
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut unpolled = Vec::new();
        for _ in 0..50 {
            let request = Request::post("/gpt-stream")
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(long_query())))
                .unwrap();
            unpolled.push(send.send_request(request).await.unwrap().into_body());
        }
        // And clients that read, over both protocols.
        let mut reading = Vec::new();
        for proto in [Proto::Http1, Proto::Http2, Proto::Http1, Proto::Http2] {
            let (client, response) = common::get(addr, proto, "/events").await;
            reading.push((proto, client, tokio::spawn(read_body(response.into_body()))));
        }
        // Let the streams fill every buffer there is.
        tokio::time::sleep(Duration::from_millis(500)).await;

        terminate(&child);
        let status = tokio::task::spawn_blocking(move || {
            wait_exit(&mut child, GRACE + Duration::from_secs(2))
        })
        .await
        .unwrap();
        assert!(status.success(), "{name}: {status}");

        for (proto, _client, reader) in reading {
            let received = reader.await.unwrap();
            assert!(
                received.error.is_none(),
                "{name} {proto:?}: {:?}",
                received.error
            );
            assert!(
                received.text().ends_with(EXAMPLE_SHUTDOWN_EVENT),
                "{name} {proto:?}: {:?}",
                received.text()
            );
        }
        for client in stalled {
            client.abort();
        }
        drop((unpolled, send));
    }
}

/// A body that never ends and never yields: what an unmanaged long poll looks like.
struct Endless;

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, tower_sse::BoxError>;

/// `/events`: an event stream with one event, then silence; anything else: [`Endless`].
async fn endless_or_events(
    request: Request<hyper::body::Incoming>,
) -> Result<http::Response<BoxBody>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    if request.uri().path() == "/events" {
        let (emitter, body) = tower_sse::channel(4);
        emitter.try_send("hello").unwrap();
        tokio::spawn(async move { emitter.closed().await });
        return Ok(tower_sse::response(body.boxed_unsync()));
    }
    // Not an event stream: the layer cannot end it, only closing the connection can.
    Ok(http::Response::new(
        Endless.map_err(|never| match never {}).boxed_unsync(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_connection_still_open_after_the_grace() {
    use hyper_util::server::graceful::GracefulShutdown;
    use tower::{Layer, ServiceExt};
    use tower_sse::{Event, Shutdown, SseLayer, StallGuard};

    let guard = StallGuard::new();
    let shutdown = Shutdown::new(&guard).grace(Duration::from_millis(500));
    let layer = SseLayer::new()
        .graceful_shutdown(shutdown.token())
        .shutdown_event(Event::new().event("shutdown").unwrap().data("\"\""));
    let app = layer.layer(tower::service_fn(endless_or_events));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let (guard, token) = (guard.clone(), shutdown.token());
        tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap(),
                    () = token.cancelled() => break,
                };
                let io = guard.wrap(stream);
                let handle = io.handle();
                let app = app.clone();
                let service = hyper::service::service_fn(move |mut request: Request<_>| {
                    request.extensions_mut().insert(handle.clone());
                    app.clone().oneshot(request)
                });
                let connection = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(io), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            graceful.shutdown().await;
        })
    };

    let mut endless = Vec::new();
    for proto in [Proto::Http1, Proto::Http2] {
        let (client, response) = common::get(addr, proto, "/endless").await;
        endless.push((client, response));
    }
    let mut reading = Vec::new();
    for proto in [Proto::Http1, Proto::Http2] {
        let (client, response) = common::get(addr, proto, "/events").await;
        reading.push((proto, client, tokio::spawn(read_body(response.into_body()))));
    }
    assert_eq!(guard.open_connections(), 4);

    let started = Instant::now();
    tokio::spawn(shutdown.now());
    tokio::time::timeout(Duration::from_millis(500) + Duration::from_secs(2), server)
        .await
        .expect("the server's graceful shutdown did not return within the grace + 2 s")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "the endless responses had their grace"
    );
    for (proto, _client, reader) in reading {
        let received = reader.await.unwrap();
        assert!(received.error.is_none(), "{proto:?}: {:?}", received.error);
        assert_eq!(
            received.text(),
            format!("data: hello\n\n{SHUTDOWN_EVENT}"),
            "{proto:?}"
        );
    }
    assert_eq!(guard.open_connections(), 0);
    drop(endless);
}
