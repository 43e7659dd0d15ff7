//! Soak tests of `channel` + `SseLayer` over real loopback sockets: connect / disconnect cycles
//! leak no task, emitter or body and keep RSS flat; clients that never read cost bounded memory
//! and make producers time out; many concurrent streams lose nothing and keep order.
//!
//! Each scenario runs small by default (a few seconds in debug) and at full size when ignored
//! tests are asked for, scaled by `SOAK_SCALE` (default 1):
//!
//!     cargo test --release --test soak -- --ignored --nocapture
//!
//! The tests of this file run one at a time: they read the process's RSS.

mod common;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{read_at_least, read_body, serve, Client, Proto};
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::{io::AsyncWriteExt, net::TcpSocket, runtime::Handle};
use tower::{Layer, ServiceExt};
use tower_sse::{channel, CloseReason, Event, SendErrorKind, SseLayer};

/// The events a producer sends while it waits for room in a client that never reads.
const NEVER_READ_EVENT_BYTES: usize = 1024;
/// How long such a producer waits for room before it gives up.
const SEND_TIMEOUT: Duration = Duration::from_millis(200);
/// The channel capacity of every stream.
const CAPACITY: usize = 8;

/// What the server saw: live producers and bodies, and how every stream ended.
#[derive(Default)]
struct Counters {
    /// Producer tasks still running, each owning its stream's `SseEmitter`.
    producers: AtomicUsize,
    /// Response bodies (the `SseBody` under the layer's body) not dropped yet.
    bodies: AtomicUsize,
    /// Reasons reported by the layer's `on_close` hook.
    closes: Tally<CloseReason>,
    /// Reasons the producers' sends failed with.
    send_errors: Tally<SendErrorKind>,
    /// Events each never-reading client's producer got into the channel before a send timed
    /// out.
    accepted_before_timeout: Mutex<Vec<usize>>,
}

/// Counts one live thing until dropped.
struct Live(Arc<Counters>, fn(&Counters) -> &AtomicUsize);

impl Live {
    fn new(counters: &Arc<Counters>, which: fn(&Counters) -> &AtomicUsize) -> Self {
        which(counters).fetch_add(1, Ordering::SeqCst);
        Live(counters.clone(), which)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many times each value was seen, in order of first sight.
struct Tally<K>(Mutex<Vec<(K, usize)>>);

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Tally(Mutex::new(Vec::new()))
    }
}

impl<K: PartialEq + Copy> Tally<K> {
    fn count(&self, key: K) {
        let mut seen = self.0.lock().unwrap();
        match seen.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => seen.push((key, 1)),
        }
    }

    fn get(&self) -> Vec<(K, usize)> {
        self.0.lock().unwrap().clone()
    }
}

/// The server under test: one handler behind `SseLayer`, with three paths.
///
/// * `/cycle`: events until the client goes away;
/// * `/never-read`: 1 KiB events with `send_timeout` until one times out, then waits for the
///   client to go;
/// * `/stream/<k>/<n>`: `n` events numbered in order, then the end.
async fn start_server(counters: &Arc<Counters>) -> SocketAddr {
    let hook_counters = counters.clone();
    let service = SseLayer::new()
        .keep_alive(Duration::from_millis(100))
        .on_close(move |info| hook_counters.closes.count(info.reason))
        .layer(tower::service_fn({
            let counters = counters.clone();
            move |request: Request<hyper::body::Incoming>| {
                let counters = counters.clone();
                async move { Ok::<_, Infallible>(respond(&counters, request.uri().path())) }
            }
        }));
    serve(move |request| {
        let service = service.clone();
        async move { service.oneshot(request).await.unwrap() }
    })
    .await
}

type Body = http_body_util::combinators::BoxBody<Bytes, tower_sse::BoxError>;

fn respond(counters: &Arc<Counters>, path: &str) -> Response<Body> {
    let (emitter, body) = channel(CAPACITY);
    let live_body = Live::new(counters, |c| &c.bodies);
    let body = body
        .map_frame(move |frame| {
            let _ = &live_body; // dropped with the body
            frame
        })
        .boxed();
    let producer = Live::new(counters, |c| &c.producers);
    let counters = counters.clone();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments[..] {
        ["cycle"] => {
            tokio::spawn(async move {
                let _producer = producer;
                for i in 0u64.. {
                    let event = Event::new().id(i.to_string()).unwrap().data("tick");
                    if let Err(err) = emitter.send(event).await {
                        counters.send_errors.count(err.kind());
                        return;
                    }
                }
            });
        }
        ["never-read"] => {
            tokio::spawn(async move {
                let _producer = producer;
                let data = "x".repeat(NEVER_READ_EVENT_BYTES);
                for accepted in 0usize.. {
                    if let Err(err) = emitter.send_timeout(data.as_str(), SEND_TIMEOUT).await {
                        counters.send_errors.count(err.kind());
                        counters
                            .accepted_before_timeout
                            .lock()
                            .unwrap()
                            .push(accepted);
                        break;
                    }
                }
                emitter.closed().await;
            });
        }
        ["stream", k, n] => {
            let n: u64 = n.parse().unwrap();
            let k = k.to_owned();
            tokio::spawn(async move {
                let _producer = producer;
                for i in 0..n {
                    let event = Event::new()
                        .id(i.to_string())
                        .unwrap()
                        .data(format!("{k}:{i}"));
                    if let Err(err) = emitter.send(event).await {
                        counters.send_errors.count(err.kind());
                        return;
                    }
                }
                emitter.complete();
            });
        }
        _ => panic!("unexpected path {path}"),
    }
    tower_sse::response(body)
}

/// Resident memory of the process now (`VmRSS`) and at its peak (`VmHWM`), in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts a new peak: `VmHWM` falls back to the current RSS (Linux 4.0 and later; where the
/// kernel refuses, the peak stays that of the whole process).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Waits until no producer, no body and no task beyond `tasks` is left, then checks that.
async fn no_leaks(counters: &Counters, tasks: usize) {
    let alive = || Handle::current().metrics().num_alive_tasks();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && (counters.producers.load(Ordering::SeqCst) > 0
            || counters.bodies.load(Ordering::SeqCst) > 0
            || alive() > tasks)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (
            counters.producers.load(Ordering::SeqCst),
            counters.bodies.load(Ordering::SeqCst),
            alive()
        ),
        (0, 0, tasks),
        "leaked (producers with their emitters, bodies, tasks) 10 s after the last client left"
    );
}

/// Runs a scenario on its own two-worker runtime, one scenario at a time.
fn run<F: Future<Output = ()>>(scenario: F) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            reset_peak_rss();
            scenario.await
        });
}

/// `full` scaled by `SOAK_SCALE`, at least 1.
fn scaled(full: usize) -> usize {
    let scale: f64 = std::env::var("SOAK_SCALE")
        .map(|value| value.parse().expect("SOAK_SCALE must be a number"))
        .unwrap_or(1.0);
    ((full as f64 * scale) as usize).max(1)
}

// --- connect / disconnect cycles -----------------------------------------------------------

/// `cycles` times: open a stream, read its first event, go away (HTTP/1.1: close the
/// connection; HTTP/2: cancel the stream on a connection that stays), 32 clients at a time.
async fn connect_disconnect(cycles: usize) {
    let counters = Arc::new(Counters::default());
    let addr = start_server(&counters).await;
    let tasks = Handle::current().metrics().num_alive_tasks();
    let workers = 32.min(cycles);
    let warm_up = (cycles / 10).max(1);
    let done = Arc::new(AtomicUsize::new(0));
    let warm_rss = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let clients: Vec<_> = (0..workers)
        .map(|worker| {
            let (done, warm_rss) = (done.clone(), warm_rss.clone());
            tokio::spawn(async move {
                let mut h2 = Client::connect(addr, Proto::Http2).await;
                for (n, cycle) in (worker..cycles).step_by(workers).enumerate() {
                    let mut h1 = None;
                    let response = if cycle % 2 == 0 {
                        h1.insert(Client::connect(addr, Proto::Http1).await)
                            .get("/cycle")
                            .await
                    } else {
                        // The h2 client library ends a connection on which it had to reset
                        // too many streams (frames still arrive for each cancelled one).
                        if n % 200 == 199 {
                            h2 = Client::connect(addr, Proto::Http2).await;
                        }
                        h2.get("/cycle").await
                    };
                    let mut body = response.into_body();
                    read_at_least(&mut body, &mut Vec::new(), 1).await;
                    drop(body);
                    if let Some(h1) = h1 {
                        h1.connection.abort();
                    }
                    if done.fetch_add(1, Ordering::SeqCst) + 1 == warm_up {
                        *warm_rss.lock().unwrap() = Some(rss_kib().0);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    no_leaks(&counters, tasks).await;
    let elapsed = started.elapsed();
    let (end_rss, peak_rss) = rss_kib();
    let warm_rss = warm_rss.lock().unwrap().expect("warm-up RSS");

    assert_eq!(
        counters.closes.get(),
        vec![(CloseReason::Disconnected, cycles)],
        "every stream must be reported once, as a disconnect"
    );
    assert_eq!(
        counters.send_errors.get(),
        vec![(SendErrorKind::Closed(CloseReason::Disconnected), cycles)],
        "every producer must learn that its client left"
    );
    // RSS after the warm-up and at the end: allocator caches come and go, a leak grows with
    // the number of cycles.
    let allowed = 4 * 1024;
    assert!(
        end_rss <= warm_rss + allowed,
        "RSS grew from {:.1} MiB after {warm_up} cycles to {:.1} MiB after {cycles}",
        mib(warm_rss),
        mib(end_rss)
    );
    eprintln!(
        "soak: {cycles} connect/disconnect cycles in {:.1} s; no task, emitter or body left; \
         RSS {:.1} MiB after {warm_up} cycles, {:.1} MiB at the end, peak {:.1} MiB",
        elapsed.as_secs_f64(),
        mib(warm_rss),
        mib(end_rss),
        mib(peak_rss)
    );
}

#[test]
fn connect_disconnect_cycles_leak_nothing() {
    run(connect_disconnect(300));
}

#[test]
#[ignore = "soak: full size, run with --release --ignored"]
fn connect_disconnect_cycles_leak_nothing_full() {
    run(connect_disconnect(scaled(10_000)));
}

// --- clients that never read ---------------------------------------------------------------

/// A raw HTTP/1.1 client that asks for `path` and never reads, with a small receive buffer.
async fn never_reading_h1(addr: SocketAddr, path: &str) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// `clients` clients open a stream and never read it, half over HTTP/1.1 (one connection
/// each), half as HTTP/2 streams (ten per connection).
async fn never_reading(clients: usize) {
    let counters = Arc::new(Counters::default());
    let addr = start_server(&counters).await;
    let tasks = Handle::current().metrics().num_alive_tasks();
    let (rss_before, _) = rss_kib();
    let started = Instant::now();

    let mut h1 = Vec::new();
    let mut h2 = Vec::new();
    let mut h2_responses = Vec::new();
    for client in 0..clients {
        if client % 2 == 0 {
            h1.push(never_reading_h1(addr, "/never-read").await);
        } else {
            if h2.len() * 10 < client.div_ceil(2) {
                h2.push(Client::connect(addr, Proto::Http2).await);
            }
            // The response is held, its body never polled.
            h2_responses.push(h2.last_mut().unwrap().get("/never-read").await);
        }
    }

    // Every producer must run into backpressure and time out: the memory held for a client
    // that does not read is bounded by the channel, the server's write buffer and the
    // socket buffers, however long the producer keeps trying.
    let deadline = Instant::now() + Duration::from_secs(60);
    while counters.accepted_before_timeout.lock().unwrap().len() < clients {
        assert!(
            Instant::now() < deadline,
            "only {} of {clients} producers saw their send time out within 60 s",
            counters.accepted_before_timeout.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let filled = started.elapsed();
    let (rss_full, _) = rss_kib();
    let accepted = counters.accepted_before_timeout.lock().unwrap().clone();
    let most = accepted.iter().max().copied().unwrap_or(0);
    let total: usize = accepted.iter().sum();
    assert_eq!(
        counters.send_errors.get(),
        vec![(SendErrorKind::Timeout, clients)]
    );
    // Per client: the channel, hyper's write buffer (about 400 KiB) and the kernel's socket
    // buffers (a few MiB on loopback); more means nothing pushes back.
    let most_bytes = most * NEVER_READ_EVENT_BYTES;
    assert!(
        most_bytes <= 16 << 20,
        "a client that never reads was sent {most_bytes} bytes before a send timed out"
    );
    // What the process holds for them: the user-space part of the above.
    let grown = rss_full.saturating_sub(rss_before);
    let allowed = clients as u64 * 1024 + 32 * 1024;
    assert!(
        grown <= allowed,
        "RSS grew by {:.1} MiB for {clients} clients that never read (allowed {:.1} MiB)",
        mib(grown),
        mib(allowed)
    );

    drop((h1, h2_responses, h2));
    no_leaks(&counters, tasks).await;
    assert_eq!(
        counters.closes.get(),
        vec![(CloseReason::Disconnected, clients)]
    );
    let (_, peak_rss) = rss_kib();
    eprintln!(
        "soak: {clients} clients that never read: every producer timed out within {:.1} s after \
         at most {most} events of {NEVER_READ_EVENT_BYTES} B ({:.1} MiB in all); RSS +{:.1} MiB \
         while they were connected, peak {:.1} MiB; all freed once they left",
        filled.as_secs_f64(),
        mib((total * NEVER_READ_EVENT_BYTES / 1024) as u64),
        mib(grown),
        mib(peak_rss)
    );
}

#[test]
fn clients_that_never_read_get_bounded_memory_and_producers_time_out() {
    run(never_reading(10));
}

#[test]
#[ignore = "soak: full size, run with --release --ignored"]
fn clients_that_never_read_get_bounded_memory_and_producers_time_out_full() {
    run(never_reading(scaled(100)));
}

// --- many concurrent streams ---------------------------------------------------------------

/// `streams` concurrent streams of `events` events each, one in five over HTTP/1.1 (one
/// connection each, so that 1,000 streams stay well under a 1,024 file descriptor limit), the
/// others over HTTP/2 (100 per connection): every event arrives, once, in order.
async fn many_streams(streams: usize, events: usize) {
    let counters = Arc::new(Counters::default());
    let addr = start_server(&counters).await;
    let tasks = Handle::current().metrics().num_alive_tasks();
    let started = Instant::now();

    let mut h2 = Vec::new();
    let mut h2_streams = 0;
    let mut responses = Vec::new();
    for k in 0..streams {
        let path = format!("/stream/{k}/{events}");
        let response = if k % 5 == 0 {
            let mut client = Client::connect(addr, Proto::Http1).await;
            let response = client.get(&path).await;
            (response, Some(client))
        } else {
            if h2_streams % 100 == 0 {
                h2.push(Client::connect(addr, Proto::Http2).await);
            }
            h2_streams += 1;
            (h2.last_mut().unwrap().get(&path).await, None)
        };
        responses.push(response);
    }
    let readers: Vec<_> = responses
        .into_iter()
        .enumerate()
        .map(|(k, (response, client))| {
            tokio::spawn(async move {
                let received = read_body(response.into_body()).await;
                drop(client);
                assert!(received.error.is_none(), "stream {k}: {:?}", received.error);
                let got = received.events();
                assert_eq!(got.len(), events, "stream {k}: events lost or repeated");
                for (i, event) in got.iter().enumerate() {
                    assert_eq!(
                        (&*event.data, &*event.last_event_id),
                        (&*format!("{k}:{i}"), &*i.to_string()),
                        "stream {k}: event {i} out of place"
                    );
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
    let elapsed = started.elapsed();
    drop(h2);
    no_leaks(&counters, tasks).await;
    assert_eq!(
        counters.closes.get(),
        vec![(CloseReason::Completed, streams)]
    );
    assert_eq!(counters.send_errors.get(), vec![]);
    let (_, peak_rss) = rss_kib();
    eprintln!(
        "soak: {streams} concurrent streams x {events} events: all {} delivered in order in \
         {:.1} s; peak RSS {:.1} MiB",
        streams * events,
        elapsed.as_secs_f64(),
        mib(peak_rss)
    );
}

#[test]
fn concurrent_streams_lose_nothing_and_keep_order() {
    run(many_streams(40, 200));
}

#[test]
#[ignore = "soak: full size, run with --release --ignored"]
fn concurrent_streams_lose_nothing_and_keep_order_full() {
    run(many_streams(scaled(1_000), scaled(1_000)));
}
