//! What an idle event stream costs a server: resident memory per connection and CPU while
//! nothing but keep-alives flows.
//!
//! Four servers, each in its own child process (this program run with `--serve NAME`), all on
//! `axum::serve` with the same runtime, each holding N idle event streams (10,000 by default)
//! that a client in this process keeps open:
//!
//! * `tower-sse`: `SseLayer` (keep-alive every 15 s) around a handler that answers with a
//!   `tower_sse::channel` body and keeps its `SseEmitter`;
//! * `axum`: axum's `Sse` with `KeepAlive::default()` (15 s) over a stream that never yields;
//! * `axum+layer`: the same `Sse` without its keep-alive, under `SseLayer`: what the layer costs
//!   in place of axum's own keep-alive;
//! * `bare`: a `text/event-stream` response over a body that never yields, no keep-alive: the
//!   cost of the HTTP stack alone, for reference.
//!
//! The server's RSS is read from `/proc/<pid>/status` after a warm-up and after all streams are
//! open; its CPU time from `/proc/<pid>/stat` over an idle window. Before each server runs,
//! the same router serves 10,000 idle streams in this process under a counting allocator:
//! the heap an idle stream holds above hyper and the socket, and in how many allocations. Clients and servers live in
//! different processes so that each stays under the open-files limit.
//!
//! `cargo bench --bench idle_connections`; `IDLE_CONNECTIONS` and `IDLE_SECONDS` change the
//! number of streams and the idle window (default 15 s: one keep-alive per stream, the steady
//! rate).

// What `/proc` tells about the server process, shared with the scale bench.
#[path = "scale/procfs.rs"]
#[allow(dead_code)] // the scale bench also reads write calls and the open-files limit
mod procfs;

mod support;

use futures::FutureExt;
use http_body::Body as _;
use procfs::{clock_ticks_per_second, cpu_ticks, rss_kb};
use std::{
    convert::Infallible,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tower::ServiceExt;

use axum::{
    response::{
        sse::{Event as AxumEvent, KeepAlive, Sse},
        IntoResponse,
    },
    routing::get,
    Router,
};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tower_sse::{SseEmitter, SseLayer};

/// Streams opened before the baseline reading, so that it includes the runtime's and the
/// allocator's warm-up.
const WARM_UP: usize = 200;
/// How many connections are being opened at once.
const CONCURRENT_OPENS: usize = 100;
/// The servers, in the order they run.
const SERVERS: [&str; 4] = ["tower-sse", "axum", "axum+layer", "bare"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--serve") {
        let name = args.get(at + 1).map(String::as_str).unwrap_or_default();
        return serve(name);
    }
    let connections = env_number("IDLE_CONNECTIONS", 10_000);
    let idle = Duration::from_secs(env_number("IDLE_SECONDS", 15) as u64);
    let ticks_per_second = clock_ticks_per_second();
    println!(
        "idle_connections: {connections} idle event streams per server, keep-alive 15 s, \
         idle window {idle:?}"
    );
    println!(
        "{:<11} {:>8} {:>12} {:>12} {:>12} {:>14} {:>12} {:>13}",
        "server",
        "streams",
        "RSS before",
        "RSS after",
        "RSS/stream",
        "idle CPU",
        "heap/stream",
        "allocs/stream"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    for name in SERVERS {
        let heap = runtime.block_on(heap_per_stream(name));
        let figures = runtime.block_on(measure(name, connections, idle, ticks_per_second));
        println!(
            "{:<11} {:>8} {:>9} KB {:>9} KB {:>9.2} KB {:>12.3} % {:>10.1} B {:>13.2}",
            name,
            figures.streams,
            figures.rss_before_kb,
            figures.rss_after_kb,
            figures.rss_per_stream_kb(),
            figures.idle_cpu_percent,
            heap.live_bytes as f64 / HEAP_STREAMS as f64,
            (heap.allocations as f64 - heap.frees as f64) / HEAP_STREAMS as f64,
        );
    }
}

/// Streams opened in this process for the heap figure.
const HEAP_STREAMS: usize = 10_000;

/// The heap an idle stream of server `name` holds in process, sockets and hyper excluded:
/// requests sent straight to its router, each response body boxed (as hyper holds it) and
/// polled once, so that it waits; measured over `HEAP_STREAMS` streams after a warm-up.
async fn heap_per_stream(name: &str) -> support::HeapUse {
    let router = router(name);
    let waker = futures::task::noop_waker();
    let mut held = Vec::with_capacity(WARM_UP + HEAP_STREAMS);
    let open = || {
        let request = http::Request::get("/sse")
            .body(axum::body::Body::empty())
            .expect("a request");
        let response = router
            .clone()
            .oneshot(request)
            .now_or_never()
            .expect("the handlers answer at once")
            .expect("infallible");
        let mut body = Box::pin(response.into_body());
        let polled = body
            .as_mut()
            .poll_frame(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending(), "{name}: an idle stream waits");
        body
    };
    for _ in 0..WARM_UP {
        held.push(open());
    }
    let ((), heap) = support::measure(|| held.extend((0..HEAP_STREAMS).map(|_| open())));
    drop(held);
    heap
}

/// What one server cost.
struct Figures {
    streams: usize,
    rss_before_kb: u64,
    rss_after_kb: u64,
    idle_cpu_percent: f64,
}

impl Figures {
    fn rss_per_stream_kb(&self) -> f64 {
        let opened = self.streams.saturating_sub(WARM_UP).max(1);
        (self.rss_after_kb as f64 - self.rss_before_kb as f64) / opened as f64
    }
}

async fn measure(name: &str, connections: usize, idle: Duration, ticks_per_second: u64) -> Figures {
    let (mut child, addr) = spawn_server(name);
    let pid = child.id();

    let mut streams = open_streams(addr, WARM_UP.min(connections)).await;
    settle().await;
    let rss_before_kb = rss_kb(pid);
    streams.extend(open_streams(addr, connections.saturating_sub(streams.len())).await);
    settle().await;
    let rss_after_kb = rss_kb(pid);

    let cpu_before = cpu_ticks(pid);
    let idle_started = Instant::now();
    tokio::time::sleep(idle).await;
    let cpu_ticks_used = cpu_ticks(pid).saturating_sub(cpu_before);
    let idle_cpu_percent = 100.0 * cpu_ticks_used as f64
        / ticks_per_second as f64
        / idle_started.elapsed().as_secs_f64();

    let figures = Figures {
        streams: streams.len(),
        rss_before_kb,
        rss_after_kb,
        idle_cpu_percent,
    };
    drop(streams);
    // The server is this program's own child, ended by its handle.
    let _ = child.kill();
    let _ = child.wait();
    figures
}

/// Starts this program as the server `name` and reads the address it listens on.
fn spawn_server(name: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("the program's path"))
        .args(["--serve", name])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server process");
    let stdout = child.stdout.take().expect("the server's output");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server's address");
    let addr = line.trim().parse().expect("an address");
    (child, addr)
}

/// Opens up to `count` event streams and returns those whose response headers arrived.
async fn open_streams(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let permits = Arc::new(Semaphore::new(CONCURRENT_OPENS));
    let mut opening = Vec::with_capacity(count);
    for _ in 0..count {
        let permits = permits.clone();
        opening.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            open_stream(addr).await
        }));
    }
    let mut streams = Vec::with_capacity(count);
    for task in opening {
        if let Ok(Some(stream)) = task.await {
            streams.push(stream);
        }
    }
    if streams.len() < count {
        eprintln!("opened {} of {count} streams", streams.len());
    }
    streams
}

/// Sends `GET /sse` and waits for the end of the response headers.
async fn open_stream(addr: SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /sse HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n")
        .await
        .ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buf).await.ok()?;
        if read == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..read]);
    }
    head.starts_with(b"HTTP/1.1 200").then_some(stream)
}

/// Lets the server finish what the last requests started.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The named server's router.
fn router(name: &str) -> Router {
    match name {
        "tower-sse" => {
            let emitters: Arc<Mutex<Vec<SseEmitter>>> = Arc::default();
            Router::new()
                .route(
                    "/sse",
                    get(move || {
                        let emitters = emitters.clone();
                        async move {
                            let (emitter, body) = tower_sse::channel(64);
                            emitters
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .push(emitter);
                            tower_sse::response(body)
                        }
                    }),
                )
                .layer(SseLayer::new())
        }
        "axum" => Router::new().route(
            "/sse",
            get(|| async {
                Sse::new(futures::stream::pending::<Result<AxumEvent, Infallible>>())
                    .keep_alive(KeepAlive::default())
            }),
        ),
        "axum+layer" => Router::new()
            .route(
                "/sse",
                get(|| async {
                    Sse::new(futures::stream::pending::<Result<AxumEvent, Infallible>>())
                }),
            )
            .layer(SseLayer::new()),
        "bare" => Router::new().route(
            "/sse",
            get(|| async {
                let body =
                    StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Infallible>>());
                (
                    [(CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::new(body),
                )
                    .into_response()
            }),
        ),
        other => {
            eprintln!("unknown server {other:?}; expected one of {SERVERS:?}");
            std::process::exit(2);
        }
    }
}

/// Server mode: serves the named variant on a loopback port, printing the address first.
fn serve(name: &str) {
    let router = router(name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        println!("{}", listener.local_addr().expect("the address"));
        axum::serve(listener, router).await.expect("serving");
    });
}
