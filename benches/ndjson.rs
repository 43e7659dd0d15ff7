//! NDJSON: tower-sse's `Ndjson` framing against axum-extra's `JsonLines`, in one run.
//!
//! * encode: a body over a stream of ready serde values, drained frame by frame
//!   (`FramedBody::<Ndjson, _>` against `JsonLines::new(stream).into_response()`), so the time
//!   covers serialising and handing the bytes over as body frames;
//! * end to end: a producer task sending values through a bounded channel of 64
//!   (`framed_channel(Ndjson, 64)` + `Emitter::send`, against `tokio::sync::mpsc` +
//!   `ReceiverStream` + `JsonLines`), served by hyper (HTTP/1.1) on a 2-worker runtime to a raw
//!   TCP client that only counts bytes.
//!
//! Cases: a small object (~50 bytes), an Ollama chat chunk (~150 bytes) and a 64 KiB string.
//! Rounds alternate which contender goes first; each round's ratio compares runs made back to
//! back; the summary is the median ratio and its range.
//!
//!     cargo bench --bench ndjson
//!
//! `NDJSON_ROUNDS` changes the number of rounds (default 5).

use std::{
    convert::Infallible,
    hint::black_box,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::response::IntoResponse;
use axum_extra::json_lines::JsonLines;
use bytes::Bytes;
use futures::stream;
use http::Response;
use http_body::Body;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tower_sse::{framing::Ndjson, FramedBody};

/// Buffered values per channel, for both contenders.
const CAPACITY: usize = 64;

#[derive(Clone, Copy)]
enum Case {
    Small,
    Chunk,
    Large,
}

impl Case {
    const ALL: [Case; 3] = [Case::Small, Case::Chunk, Case::Large];

    fn name(self) -> &'static str {
        match self {
            Case::Small => "small object",
            Case::Chunk => "Ollama chat chunk",
            Case::Large => "64 KiB string",
        }
    }

    /// Values per encoding run and per end-to-end run.
    fn counts(self) -> (usize, usize) {
        match self {
            Case::Small => (200_000, 300_000),
            Case::Chunk => (100_000, 200_000),
            Case::Large => (1_000, 2_000),
        }
    }
}

/// One value of a case, built the same way for both contenders.
#[derive(Serialize)]
#[serde(untagged)]
enum Value {
    Small {
        n: usize,
        token: &'static str,
        done: bool,
    },
    Chunk {
        model: &'static str,
        created_at: &'static str,
        message: Message,
        done: bool,
    },
    Large {
        n: usize,
        text: &'static str,
    },
}

#[derive(Serialize)]
struct Message {
    role: &'static str,
    content: &'static str,
}

fn large_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| ('a'..='z').cycle().take(64 * 1024).collect())
}

fn value(case: Case, n: usize) -> Value {
    match case {
        Case::Small => Value::Small {
            n,
            token: " to",
            done: false,
        },
        Case::Chunk => Value::Chunk {
            model: "llama3.2",
            created_at: "2026-12-01T07:31:28.512721623Z",
            message: Message {
                role: "assistant",
                content: " world",
            },
            done: false,
        },
        Case::Large => Value::Large {
            n,
            text: large_text(),
        },
    }
}

#[derive(Clone, Copy)]
enum Contender {
    TowerSse,
    AxumExtra,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::TowerSse => "tower-sse",
            Contender::AxumExtra => "axum-extra",
        }
    }

    /// Encodes `count` ready values into a body and drains it; the time and the bytes.
    fn encode(self, case: Case, count: usize) -> (Duration, usize) {
        let values = stream::iter((0..count).map(move |n| Ok::<_, Infallible>(value(case, n))));
        let start = Instant::now();
        let bytes = match self {
            Contender::TowerSse => drain(FramedBody::<Ndjson, _>::new(values)),
            Contender::AxumExtra => drain(JsonLines::new(values).into_response().into_body()),
        };
        (start.elapsed(), bytes)
    }

    /// Streams `count` values from a producer task to one client over loopback.
    async fn end_to_end(self, case: Case, count: usize) -> (Duration, usize) {
        match self {
            Contender::TowerSse => {
                serve_one(move || {
                    let (emitter, body) = tower_sse::framed_channel(Ndjson, CAPACITY);
                    tokio::spawn(async move {
                        for n in 0..count {
                            if emitter.send(value(case, n)).await.is_err() {
                                return;
                            }
                        }
                        emitter.complete();
                    });
                    tower_sse::framed_response(body).map(axum::body::Body::new)
                })
                .await
            }
            Contender::AxumExtra => {
                serve_one(move || {
                    let (sender, receiver) = mpsc::channel(CAPACITY);
                    tokio::spawn(async move {
                        for n in 0..count {
                            let item = Ok::<_, Infallible>(value(case, n));
                            if sender.send(item).await.is_err() {
                                return;
                            }
                        }
                    });
                    JsonLines::new(ReceiverStream::new(receiver)).into_response()
                })
                .await
            }
        }
    }
}

/// Polls every frame out of a body whose items are all ready; returns the data bytes.
fn drain<B>(mut body: B) -> usize
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut bytes = 0;
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(frame)) => {
                if let Some(data) = frame.expect("the values encode").data_ref() {
                    bytes += black_box(data).len();
                }
            }
            Poll::Ready(None) => return bytes,
            Poll::Pending => unreachable!("every value is ready"),
        }
    }
}

/// Serves one connection on a fresh loopback port with the response `respond` makes, and
/// times a raw client reading all of it; the time and the bytes on the wire.
async fn serve_one(
    respond: impl Fn() -> Response<axum::body::Body> + Send + Sync + 'static,
) -> (Duration, usize) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("a bound address");
    let respond = std::sync::Arc::new(respond);
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("the client connects");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let service = service_fn(move |_request| {
            let response = respond();
            async move { Ok::<_, Infallible>(response) }
        });
        http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
    });
    let start = Instant::now();
    let bytes = read_all(address).await;
    let elapsed = start.elapsed();
    server
        .await
        .expect("the server task ends")
        .expect("the connection is served");
    (elapsed, bytes)
}

/// Sends the request and counts the bytes of the response until the server closes.
async fn read_all(address: SocketAddr) -> usize {
    let mut stream = TcpStream::connect(address)
        .await
        .expect("the server listens");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .expect("the request is sent");
    let mut buffer = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        match stream
            .read(&mut buffer)
            .await
            .expect("the response is read")
        {
            0 => return total,
            read => total += read,
        }
    }
}

/// Runs both contenders `rounds` times, alternating who goes first; prints a row per round and
/// returns the median ratio of tower-sse's speed to axum-extra's, with its range.
fn compare(
    label: &str,
    rounds: usize,
    count: usize,
    mut run: impl FnMut(Contender) -> (Duration, usize),
) -> (f64, f64, f64) {
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let order = if round % 2 == 1 {
            [Contender::TowerSse, Contender::AxumExtra]
        } else {
            [Contender::AxumExtra, Contender::TowerSse]
        };
        let mut rates = [0.0; 2];
        for contender in order {
            let (elapsed, bytes) = run(contender);
            let rate = count as f64 / elapsed.as_secs_f64();
            println!(
                "| {label} | {round} | {} | {:.3} M/s | {:.0} MB/s |",
                contender.name(),
                rate / 1e6,
                bytes as f64 / elapsed.as_secs_f64() / 1e6
            );
            rates[matches!(contender, Contender::AxumExtra) as usize] = rate;
        }
        ratios.push(rates[0] / rates[1]);
    }
    ratios.sort_by(f64::total_cmp);
    (
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
    )
}

fn main() {
    let rounds = std::env::var("NDJSON_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5usize)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // Same bytes from both, so the comparison is like with like.
    for case in Case::ALL {
        let (ours, theirs) = (
            Contender::TowerSse.encode(case, 3),
            Contender::AxumExtra.encode(case, 3),
        );
        assert_eq!(
            ours.1,
            theirs.1,
            "{}: both write the same lines",
            case.name()
        );
    }

    println!("| run | round | contender | values/s | MB/s |");
    println!("|---|--:|---|--:|--:|");
    let mut summary = Vec::new();
    for case in Case::ALL {
        let (encode_count, e2e_count) = case.counts();
        let label = format!("encode, {}", case.name());
        let encode = compare(&label, rounds, encode_count, |contender| {
            contender.encode(case, encode_count)
        });
        let label = format!("end to end, {}", case.name());
        let end_to_end = compare(&label, rounds, e2e_count, |contender| {
            runtime.block_on(contender.end_to_end(case, e2e_count))
        });
        summary.push((case, encode, end_to_end));
    }
    println!("\n| case | encode: tower-sse vs axum-extra | end to end: tower-sse vs axum-extra |");
    println!("|---|--:|--:|");
    for (case, (e, e_lo, e_hi), (t, t_lo, t_hi)) in summary {
        println!(
            "| {} | **{e:.2}x** ({e_lo:.2}x–{e_hi:.2}x) | **{t:.2}x** ({t_lo:.2}x–{t_hi:.2}x) |",
            case.name()
        );
    }
}
