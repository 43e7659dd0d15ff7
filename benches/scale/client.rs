//! Client mode: many event streams to one server, each read by its own task, recording when
//! each event arrived against the publish time it carries.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
};

use crate::{lock, now_ns, runtime, Protocol};

/// Connections a client opens at once.
const CONCURRENT_OPENS: usize = 64;

/// What a client process received.
#[derive(Default)]
struct Received {
    events: AtomicU64,
    /// When the latest event arrived (ns).
    last: AtomicU64,
    /// Publish-to-receipt times (µs) since the last report.
    latencies: Mutex<Vec<u64>>,
}

impl Received {
    fn event(&self, published: u64) {
        let now = now_ns();
        self.events.fetch_add(1, Ordering::Relaxed);
        self.last.fetch_max(now, Ordering::Relaxed);
        lock(&self.latencies).push(now.saturating_sub(published) / 1000);
    }
}

/// Finds the `data: <publish time>` lines in a stream's bytes, across reads.
#[derive(Default)]
struct Scanner {
    pending: Vec<u8>,
}

impl Scanner {
    fn feed(&mut self, bytes: &[u8], received: &Received) {
        const FIELD: &[u8] = b"data: ";
        self.pending.extend_from_slice(bytes);
        let mut from = 0;
        loop {
            let Some(at) = memchr::memmem::find(&self.pending[from..], FIELD) else {
                // Keep what could be the start of a field cut by the read.
                from = self.pending.len().saturating_sub(FIELD.len() - 1).max(from);
                break;
            };
            let value = from + at + FIELD.len();
            let Some(end) = memchr::memchr(b'\n', &self.pending[value..]) else {
                from += at;
                break;
            };
            let published = std::str::from_utf8(&self.pending[value..value + end])
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0);
            received.event(published);
            from = value + end + 1;
        }
        self.pending.drain(..from);
    }
}

/// Client mode: `--client h1|h2 ADDR STREAMS PER_CONNECTION`. Opens the streams, prints
/// `opened N`, then answers `wait TOTAL TIMEOUT_MS` (`reached EVENTS LAST_NS` once TOTAL events
/// arrived since the last report, or at the timeout) and `report` (the latencies in µs,
/// comma-separated; clears them and the count). Ends when its input closes.
pub(crate) fn client(args: &[String]) {
    let protocol = args
        .first()
        .and_then(|p| Protocol::parse(p))
        .expect("h1 or h2");
    let addr: SocketAddr = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .expect("an address");
    let streams: usize = args
        .get(2)
        .and_then(|n| n.parse().ok())
        .expect("a stream count");
    let per_connection: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100);
    runtime().block_on(async move {
        let received = Arc::new(Received::default());
        let opened = match protocol {
            Protocol::Http1 => open_h1(addr, streams, &received).await,
            Protocol::Http2 => open_h2(addr, streams, per_connection, &received).await,
        };
        println!("opened {opened}");
        let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(command)) = commands.next_line().await {
            let words: Vec<&str> = command.split_whitespace().collect();
            match words.as_slice() {
                ["wait", total, timeout] => {
                    let total: u64 = total.parse().unwrap_or(0);
                    let deadline =
                        Instant::now() + Duration::from_millis(timeout.parse().unwrap_or(0));
                    while received.events.load(Ordering::Relaxed) < total
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    println!(
                        "reached {} {}",
                        received.events.load(Ordering::Relaxed),
                        received.last.load(Ordering::Relaxed)
                    );
                }
                ["reset"] => {
                    lock(&received.latencies).clear();
                    received.events.store(0, Ordering::Relaxed);
                    println!("reset");
                }
                ["report"] => {
                    let latencies = std::mem::take(&mut *lock(&received.latencies));
                    received.events.store(0, Ordering::Relaxed);
                    let list: Vec<String> = latencies.iter().map(u64::to_string).collect();
                    println!("report {}", list.join(","));
                }
                _ => eprintln!("unknown command {command:?}"),
            }
        }
        std::process::exit(0);
    });
}

/// Opens `streams` HTTP/1.1 connections, each one `GET /sse` read by its own task.
async fn open_h1(addr: SocketAddr, streams: usize, received: &Arc<Received>) -> usize {
    let permits = Arc::new(Semaphore::new(CONCURRENT_OPENS));
    let mut opening = Vec::with_capacity(streams);
    for _ in 0..streams {
        let permits = Arc::clone(&permits);
        opening.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            let mut socket = TcpStream::connect(addr).await.ok()?;
            socket.set_nodelay(true).ok()?;
            socket
                .write_all(
                    b"GET /sse HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n",
                )
                .await
                .ok()?;
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            let end = loop {
                let read = socket.read(&mut buf).await.ok()?;
                if read == 0 {
                    return None;
                }
                head.extend_from_slice(&buf[..read]);
                if let Some(at) = memchr::memmem::find(&head, b"\r\n\r\n") {
                    break at + 4;
                }
            };
            head.starts_with(b"HTTP/1.1 200")
                .then_some((socket, head.split_off(end)))
        }));
    }
    let mut opened = 0;
    for task in opening {
        if let Ok(Some((mut socket, rest))) = task.await {
            opened += 1;
            let received = Arc::clone(received);
            tokio::spawn(async move {
                let mut scanner = Scanner::default();
                scanner.feed(&rest, &received);
                let mut buf = vec![0u8; 2048];
                while let Ok(read) = socket.read(&mut buf).await {
                    if read == 0 {
                        break;
                    }
                    scanner.feed(&buf[..read], &received);
                }
            });
        }
    }
    opened
}

/// Opens `streams` HTTP/2 streams, `per_connection` on each connection.
async fn open_h2(
    addr: SocketAddr,
    streams: usize,
    per_connection: usize,
    received: &Arc<Received>,
) -> usize {
    let permits = Arc::new(Semaphore::new(CONCURRENT_OPENS));
    let mut opening = Vec::new();
    let mut left = streams;
    while left > 0 {
        let count = left.min(per_connection);
        left -= count;
        let permits = Arc::clone(&permits);
        let received = Arc::clone(received);
        opening.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            let socket = TcpStream::connect(addr).await.ok()?;
            socket.set_nodelay(true).ok()?;
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(socket))
                    .await
                    .ok()?;
            tokio::spawn(connection);
            let requests = (0..count).map(|_| {
                let mut sender = sender.clone();
                let received = Arc::clone(&received);
                async move {
                    let request = Request::get(format!("http://{addr}/sse"))
                        .header("accept", "text/event-stream")
                        .body(Empty::<Bytes>::new())
                        .ok()?;
                    let response = sender.send_request(request).await.ok()?;
                    if !response.status().is_success() {
                        return None;
                    }
                    let mut body = response.into_body();
                    tokio::spawn(async move {
                        let mut scanner = Scanner::default();
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Ok(data) = frame.into_data() {
                                scanner.feed(&data, &received);
                            }
                        }
                    });
                    Some(())
                }
            });
            let opened = futures::future::join_all(requests)
                .await
                .into_iter()
                .flatten()
                .count();
            Some(opened)
        }));
    }
    let mut opened = 0;
    for task in opening {
        if let Ok(Some(count)) = task.await {
            opened += count;
        }
    }
    opened
}
