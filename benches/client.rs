//! The client over loopback: `tower_sse::client::EventSource` against `reqwest-eventsource`,
//! reading the same bytes from the same server, rounds alternating the contenders.
//!
//! * tiny events: `data: hi`, many per response; events per second.
//! * 1 MiB events: one `data:` line of 1 MiB each; also compared with only draining the same
//!   response through the same hyper client ("hyper, body only": the transport, no parsing)
//!   and with only reading its bytes off a socket ("socket read only"), the floors any client
//!   sits on: a parser linear in its input stays near them, a quadratic one falls far behind.
//!
//! The server writes a response prepared in memory (headers, then the events, then it closes
//! the connection), so it is never the bottleneck. Both clients speak HTTP/1.1 through hyper.
//!
//!     cargo bench --features client --bench client
//!
//! `CLIENT_BENCH_EVENTS` (tiny events per round, default 200,000), `CLIENT_BENCH_LARGE` (1 MiB
//! events per round, default 16) and `CLIENT_BENCH_ROUNDS` (default 5) change the sizes.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use http_body_util::BodyExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const MIB: usize = 1024 * 1024;

#[derive(Clone, Copy, PartialEq)]
enum Contender {
    TowerSse,
    ReqwestEventSource,
    HyperBodyOnly,
    ReadOnly,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::TowerSse => "tower-sse client",
            Contender::ReqwestEventSource => "reqwest-eventsource",
            Contender::HyperBodyOnly => "hyper, body only",
            Contender::ReadOnly => "socket read only",
        }
    }

    /// Reads `events` events from `addr`, checking each one's data length; the time taken.
    async fn run(self, addr: SocketAddr, events: usize, data_len: usize) -> Duration {
        let url = format!("http://{addr}/");
        let start = Instant::now();
        match self {
            Contender::TowerSse => {
                let source = tower_sse::client::EventSource::get(url.parse().unwrap())
                    .max_event_size(2 * MIB);
                let mut messages = source.stream().messages().take(events);
                let mut seen = 0;
                while let Some(message) = messages.next().await {
                    assert_eq!(message.unwrap().data.len(), data_len);
                    seen += 1;
                }
                assert_eq!(seen, events);
            }
            Contender::ReqwestEventSource => {
                let mut source = reqwest_eventsource::EventSource::get(&url);
                let mut seen = 0;
                while seen < events {
                    match source.next().await.expect("the stream ended early") {
                        Ok(reqwest_eventsource::Event::Open) => {}
                        Ok(reqwest_eventsource::Event::Message(message)) => {
                            assert_eq!(message.data.len(), data_len);
                            seen += 1;
                        }
                        Err(error) => panic!("reqwest-eventsource: {error}"),
                    }
                }
                source.close();
            }
            Contender::HyperBodyOnly => {
                let response = tower_sse::client::http_client()
                    .get(url.parse().unwrap())
                    .await
                    .unwrap();
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    frame.unwrap();
                }
            }
            Contender::ReadOnly => {
                let mut socket = TcpStream::connect(addr).await.unwrap();
                socket
                    .write_all(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = vec![0; 256 * 1024];
                while socket.read(&mut buf).await.unwrap() > 0 {}
            }
        }
        start.elapsed()
    }
}

/// Serves `response` (a whole HTTP response, close-delimited) to every connection.
async fn serve(response: Arc<Vec<u8>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let response = response.clone();
            tokio::spawn(async move {
                // Read the request head, then answer.
                let mut head = Vec::new();
                let mut buf = [0; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

fn response(event: &[u8], events: usize) -> Arc<Vec<u8>> {
    let mut response = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
        cache-control: no-cache\r\nconnection: close\r\n\r\n"
        .to_vec();
    response.reserve(event.len() * events);
    for _ in 0..events {
        response.extend_from_slice(event);
    }
    Arc::new(response)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |value| value.parse().expect(name))
}

/// Events per second, in millions when there are that many.
fn format_rate(rate: f64) -> String {
    if rate >= 1e5 {
        format!("{:.3} M events/s", rate / 1e6)
    } else {
        format!("{rate:.1} events/s")
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs the contenders round by round; prints each round and the medians.
async fn compare(
    case: &str,
    contenders: &[Contender],
    event: &[u8],
    data_len: usize,
    events: usize,
    rounds: usize,
) {
    let addr = serve(response(event, events)).await;
    println!(
        "\n{case}: {events} events of {} bytes per round, {rounds} rounds",
        event.len()
    );
    // One warm-up round each.
    for &contender in contenders {
        contender.run(addr, events, data_len).await;
    }
    let mut per_contender = vec![Vec::new(); contenders.len()];
    for round in 1..=rounds {
        let mut line = format!("  round {round}:");
        for (i, &contender) in contenders.iter().enumerate() {
            let took = contender.run(addr, events, data_len).await;
            let rate = events as f64 / took.as_secs_f64();
            per_contender[i].push(rate);
            line += &format!("  {} {}", contender.name(), format_rate(rate));
        }
        println!("{line}");
    }
    let medians: Vec<f64> = per_contender.into_iter().map(median).collect();
    for (contender, rate) in contenders.iter().zip(&medians) {
        let mb = rate * event.len() as f64 / 1e6;
        println!(
            "  median {:<20} {:>12.0} events/s {:>9.0} MB/s {:>10.3} ms/event",
            contender.name(),
            rate,
            mb,
            1e3 / rate
        );
    }
    println!(
        "  tower-sse / reqwest-eventsource: {:.2}x",
        medians[0] / medians[1]
    );
    for (i, &contender) in contenders.iter().enumerate().skip(2) {
        println!(
            "  tower-sse time / {} time: {:.2}x",
            contender.name(),
            medians[i] / medians[0]
        );
    }
}

fn main() {
    let events = env_usize("CLIENT_BENCH_EVENTS", 200_000);
    let large = env_usize("CLIENT_BENCH_LARGE", 16);
    let rounds = env_usize("CLIENT_BENCH_ROUNDS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        compare(
            "tiny events (data: hi)",
            &[Contender::TowerSse, Contender::ReqwestEventSource],
            b"data: hi\n\n",
            2,
            events,
            rounds,
        )
        .await;
        let mut big = b"data: ".to_vec();
        big.extend(std::iter::repeat_n(b'x', MIB));
        big.extend_from_slice(b"\n\n");
        compare(
            "1 MiB single-line events",
            &[
                Contender::TowerSse,
                Contender::ReqwestEventSource,
                Contender::HyperBodyOnly,
                Contender::ReadOnly,
            ],
            &big,
            MIB,
            large,
            rounds,
        )
        .await;
    });
}
