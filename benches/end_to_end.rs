//! End to end over loopback: tiny events (`data: hi`) from a producer task through a bounded
//! channel of 64 to one client, served by hyper (HTTP/1.1), on a 2-worker tokio runtime.
//!
//! * `tower-sse`: `tower_sse::channel(64)`; the producer awaits `SseEmitter::send`.
//! * `axum`: axum's `Sse` over `tokio::sync::mpsc::channel(64)` and `ReceiverStream`; the
//!   producer awaits `Sender::send`.
//!
//! Both responses are served by the same hyper connection code, each body wrapped in a counter
//! of the frames it hands to hyper. The client is a raw TCP socket that sends the request and
//! only counts bytes until the server closes, so it never is the bottleneck. Rounds alternate
//! the contenders; each round's ratio compares runs made back to back.
//!
//! First, with nothing else running, the heap left live by many idle channels (each response
//! polled once, as a connection waiting for its first event would be) gives the memory per
//! idle stream; the emitter or sender and the response are boxed, as a server's connection
//! task holds them on the heap.
//!
//!     cargo bench --bench end_to_end
//!
//! `END_TO_END_EVENTS` and `END_TO_END_ROUNDS` change the defaults (1,000,000 and 5).

mod support;

use std::{
    any::Any,
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::response::{
    sse::{Event as AxumEvent, Sse},
    IntoResponse,
};
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;

/// Buffered events per channel, for both contenders.
const CAPACITY: usize = 64;
/// Idle channels held at once for the memory figure.
const IDLE_CHANNELS: usize = 10_000;
/// The wire form of every event: `data: hi` and the blank line.
const EVENT_BYTES: usize = b"data: hi\n\n".len();

#[derive(Clone, Copy)]
enum Contender {
    TowerSse,
    Axum,
}

impl Contender {
    const ALL: [Contender; 2] = [Contender::TowerSse, Contender::Axum];

    fn name(self) -> &'static str {
        match self {
            Contender::TowerSse => "tower-sse",
            Contender::Axum => "axum",
        }
    }

    /// Streams `events` events to one client; what it took.
    async fn run(self, events: usize) -> Outcome {
        match self {
            Contender::TowerSse => {
                serve_one(events, |events| {
                    let (emitter, body) = tower_sse::channel(CAPACITY);
                    tokio::spawn(async move {
                        for _ in 0..events {
                            if emitter.send("hi").await.is_err() {
                                return;
                            }
                        }
                        emitter.complete();
                    });
                    tower_sse::response(body)
                })
                .await
            }
            Contender::Axum => {
                serve_one(events, |events| {
                    let (sender, receiver) = mpsc::channel(CAPACITY);
                    tokio::spawn(async move {
                        for _ in 0..events {
                            let event = AxumEvent::default().data("hi");
                            if sender.send(Ok::<_, Infallible>(event)).await.is_err() {
                                return;
                            }
                        }
                    });
                    Sse::new(ReceiverStream::new(receiver)).into_response()
                })
                .await
            }
        }
    }

    /// One channel and its response, polled once so it waits for an event, boxed.
    fn idle(self) -> Box<dyn Any> {
        match self {
            Contender::TowerSse => {
                let (emitter, body) = tower_sse::channel(CAPACITY);
                let mut response = tower_sse::response(body);
                poll_once(response.body_mut());
                Box::new((emitter, response))
            }
            Contender::Axum => {
                let (sender, receiver) = mpsc::channel::<Result<AxumEvent, Infallible>>(CAPACITY);
                let mut response = Sse::new(ReceiverStream::new(receiver)).into_response();
                poll_once(response.body_mut());
                Box::new((sender, response))
            }
        }
    }
}

fn poll_once<B: Body + Unpin>(body: &mut B) {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    assert!(
        Pin::new(body).poll_frame(&mut cx).is_pending(),
        "an idle stream has nothing to send"
    );
}

/// What one run of `events` events took.
struct Outcome {
    elapsed: Duration,
    body_bytes: usize,
    frames: usize,
    events: usize,
}

impl Outcome {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn megabytes_per_second(&self) -> f64 {
        self.body_bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    fn frames_per_event(&self) -> f64 {
        self.frames as f64 / self.events as f64
    }
}

/// Serves one connection on a fresh loopback port with the response `respond` makes, and
/// times a raw client reading all of it.
async fn serve_one<B>(events: usize, respond: fn(usize) -> Response<B>) -> Outcome
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<tower_sse::BoxError>,
{
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("a bound address");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let server = tokio::spawn({
        let tally = Arc::clone(&tally);
        async move {
            let (stream, _) = listener.accept().await.expect("the client connects");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let service = service_fn(move |_request| {
                let response = respond(events).map(|body| Counted::new(body, &tally));
                async move { Ok::<_, Infallible>(response) }
            });
            http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
        }
    });
    let start = Instant::now();
    let wire_bytes = read_all(address).await;
    let elapsed = start.elapsed();
    server
        .await
        .expect("the server task ends")
        .expect("the connection is served");
    let tally = *tally.lock().expect("the tally is not poisoned");
    assert_eq!(tally.bytes, events * EVENT_BYTES, "every event was sent");
    assert!(wire_bytes > tally.bytes, "every event reached the client");
    Outcome {
        elapsed,
        body_bytes: tally.bytes,
        frames: tally.frames,
        events,
    }
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

/// Data frames and their bytes, as a body handed them to hyper.
#[derive(Default, Clone, Copy)]
struct Tally {
    frames: usize,
    bytes: usize,
}

/// A body that counts its data frames, and reports them when hyper drops it.
struct Counted<B> {
    inner: B,
    tally: Tally,
    report: Arc<Mutex<Tally>>,
}

impl<B> Counted<B> {
    fn new(inner: B, report: &Arc<Mutex<Tally>>) -> Self {
        Counted {
            inner,
            tally: Tally::default(),
            report: Arc::clone(report),
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.tally.frames += 1;
                self.tally.bytes += data.len();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        if let Ok(mut report) = self.report.lock() {
            *report = self.tally;
        }
    }
}

/// Heap bytes and allocations that one idle channel keeps.
fn idle_heap(contender: Contender) -> (f64, f64) {
    drop(contender.idle());
    let mut held = Vec::with_capacity(IDLE_CHANNELS);
    let ((), heap) = support::measure(|| held.extend((0..IDLE_CHANNELS).map(|_| contender.idle())));
    drop(held);
    let channels = IDLE_CHANNELS as f64;
    (
        heap.live_bytes as f64 / channels,
        heap.allocations as f64 / channels,
    )
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let events = env_or("END_TO_END_EVENTS", 1_000_000);
    let rounds = env_or("END_TO_END_ROUNDS", 5).max(1);
    let idle = Contender::ALL.map(idle_heap);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!("{events} tiny events per run, channel capacity {CAPACITY}, 2 tokio workers\n");
    println!("| round | contender | events/s | MB/s | frames/event | tower-sse vs axum |");
    println!("|--:|---|--:|--:|--:|--:|");
    let run = |contender: Contender| runtime.block_on(contender.run(events));
    let mut ratios = Vec::new();
    let mut outcomes: [Vec<Outcome>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        // Alternate who goes first, so neither always runs on a warmer machine.
        let (ours, axum) = if round % 2 == 1 {
            let ours = run(Contender::TowerSse);
            (ours, run(Contender::Axum))
        } else {
            let axum = run(Contender::Axum);
            (run(Contender::TowerSse), axum)
        };
        let ratio = ours.events_per_second() / axum.events_per_second();
        for (contender, outcome) in Contender::ALL.iter().zip([&ours, &axum]) {
            println!(
                "| {round} | {} | {:.2} M | {:.1} | {:.4} | {} |",
                contender.name(),
                outcome.events_per_second() / 1e6,
                outcome.megabytes_per_second(),
                outcome.frames_per_event(),
                match contender {
                    Contender::TowerSse => format!("{ratio:.2}x"),
                    Contender::Axum => String::new(),
                },
            );
        }
        ratios.push(ratio);
        outcomes[0].push(ours);
        outcomes[1].push(axum);
    }

    println!();
    println!(
        "| contender | events/s (median) | MB/s (median) | frames/event (median) \
         | heap bytes per idle channel | allocations per idle channel |"
    );
    println!("|---|--:|--:|--:|--:|--:|");
    for ((contender, outcomes), (bytes, allocations)) in
        Contender::ALL.iter().zip(&outcomes).zip(idle)
    {
        let median = |value: fn(&Outcome) -> f64| {
            let mut values: Vec<f64> = outcomes.iter().map(value).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        println!(
            "| {} | {:.2} M | {:.1} | {:.4} | {bytes:.0} | {allocations:.1} |",
            contender.name(),
            median(Outcome::events_per_second) / 1e6,
            median(Outcome::megabytes_per_second),
            median(Outcome::frames_per_event),
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "\ntower-sse vs axum, events/s, per round: median {:.2}x, range {:.2}x to {:.2}x",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
    );
}
