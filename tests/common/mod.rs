//! Shared test harness: a real hyper server on 127.0.0.1:0 and a real hyper client.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// The HTTP version a test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

/// Serves `handler` on a fresh loopback port (HTTP/1.1 and HTTP/2 prior knowledge) until the
/// test's runtime ends.
pub async fn serve<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A client connection: the request sender, and the task driving the connection (abort it to
/// drop the connection).
pub struct Client {
    send: Sender,
    pub connection: tokio::task::JoinHandle<()>,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Client {
    pub async fn connect(addr: SocketAddr, proto: Proto) -> Client {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        match proto {
            Proto::Http1 => {
                let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                let connection = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Client {
                    send: Sender::Http1(send),
                    connection,
                }
            }
            Proto::Http2 => {
                let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
                let connection = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Client {
                    send: Sender::Http2(send),
                    connection,
                }
            }
        }
    }

    pub async fn get(&mut self, path: &str) -> Response<Incoming> {
        self.send(Request::get(path)).await
    }

    pub async fn post(&mut self, path: &str) -> Response<Incoming> {
        self.send(Request::post(path)).await
    }

    async fn send(&mut self, request: http::request::Builder) -> Response<Incoming> {
        let request = request
            .header("host", "127.0.0.1")
            .body(Empty::new())
            .unwrap();
        match &mut self.send {
            Sender::Http1(send) => send.send_request(request).await.unwrap(),
            Sender::Http2(send) => send.send_request(request).await.unwrap(),
        }
    }
}

/// Connects and sends `GET path`.
pub async fn get(addr: SocketAddr, proto: Proto, path: &str) -> (Client, Response<Incoming>) {
    let mut client = Client::connect(addr, proto).await;
    let response = client.get(path).await;
    (client, response)
}

/// How a response body ended, as the client saw it.
#[derive(Debug)]
pub struct Received {
    pub bytes: Vec<u8>,
    /// `None` for a clean end, or the body error.
    pub error: Option<hyper::Error>,
}

impl Received {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.bytes).unwrap()
    }

    /// The events of the body, decoded by the crate's spec-exact parser.
    pub fn events(&self) -> Vec<tower_sse::MessageEvent> {
        let mut parser = tower_sse::Parser::with_max_buffer(usize::MAX);
        parser.feed(&self.bytes).unwrap();
        parser.finish();
        std::iter::from_fn(|| parser.next_event()).collect()
    }
}

/// Reads the whole body, with a time limit so that a hang fails the test instead of stalling it.
pub async fn read_body(body: Incoming) -> Received {
    tokio::time::timeout(Duration::from_secs(60), async move {
        let mut body = body;
        let mut bytes = Vec::new();
        loop {
            match body.frame().await {
                None => return Received { bytes, error: None },
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => {
                    return Received {
                        bytes,
                        error: Some(error),
                    }
                }
            }
        }
    })
    .await
    .expect("the body did not end within 60 s")
}

/// Reads data frames until `bytes` holds at least `len` bytes.
pub async fn read_at_least(body: &mut Incoming, bytes: &mut Vec<u8>, len: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while bytes.len() < len {
            let frame = body.frame().await.expect("body ended early").unwrap();
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
    })
    .await
    .expect("the expected bytes did not arrive within 10 s")
}

/// The input cut at the given points (taken modulo its length, in any order).
pub fn split<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&input[start..cut]);
        start = cut;
    }
    chunks.push(&input[start..]);
    chunks
}

/// The example servers the black-box tests start as processes.
pub const EXAMPLES: [&str; 2] = ["gpt_stream_axum", "gpt_stream_hyper"];

/// Where the example binaries of this test's build profile are, built (all features) the
/// first time a test of this binary asks.
pub fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // A test runs as target/<profile>/deps/<name>-<hash>.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
        let mut build = Command::new(env!("CARGO"));
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--all-features"]);
        for example in EXAMPLES {
            build.args(["--example", example]);
        }
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo build");
        assert!(status.success(), "cargo build of the examples failed");
        profile_dir.join("examples")
    })
}
