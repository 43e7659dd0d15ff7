//! Fan-out cost: one publisher, 1,000 subscribers, tiny events, each subscriber's response body
//! drained by polling frames, as a server would. Three contenders in the same run:
//!
//! * `hub`: a `tower_sse::Hub` topic, each subscriber an `SseBody<Subscriber>`. Every event is
//!   numbered (`id:`) and encoded once; subscribers share its bytes.
//! * `axum`: `tokio::sync::broadcast` of `Arc<str>` and, per subscriber, axum's `Sse` over a
//!   stream that turns each message into an axum `Event` (encoding once per subscriber). No ids.
//! * `broadcast+SseBody`: the same broadcast channel, each message encoded per subscriber into
//!   a `tower_sse::Event` and written by `SseBody`: how much of the gain is the hub's.
//!
//! Two scenarios, each run several times per contender, interleaved; the median is reported:
//!
//! * `burst`: all events are published at once (every queue holds them all, so none lags) and
//!   the subscribers catch up: throughput when subscribers are behind.
//! * `live`: one event at a time; the next is published once every subscriber has received the
//!   previous one, so every event wakes 1,000 idle subscribers: the cost of a live feed.
//!
//! Every subscriber's byte count is checked, so a contender that lost events would be caught.
//! Then the heap left live by 10,000 idle subscribers (each polled once, so it is registered
//! for the next event) gives the memory per idle subscriber, plus the body's own size, which
//! lives inline in the connection's task.
//!
//!     cargo bench --bench fanout
//!
//! `FANOUT_SUBSCRIBERS`, `FANOUT_EVENTS` (burst), `FANOUT_LIVE_EVENTS` and `FANOUT_ROUNDS`
//! change the defaults (1,000, 10,000, 2,000 and 5).

mod support;

use std::{
    convert::Infallible,
    pin::pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::Context,
    time::{Duration, Instant},
};

use axum::response::{
    sse::{Event as AxumEvent, Sse},
    IntoResponse,
};
use bytes::Bytes;
use futures::{stream, Stream};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::{broadcast, Notify};
use tower_sse::{Event, Hub, SseBody, Topic};

/// The data of every event.
const DATA: &str = "hi";
/// Subscribers held idle for the memory figure.
const IDLE_SUBSCRIBERS: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Hub,
    Axum,
    BroadcastSseBody,
}

impl Contender {
    const ALL: [Contender; 3] = [Contender::Hub, Contender::Axum, Contender::BroadcastSseBody];

    fn name(self) -> &'static str {
        match self {
            Contender::Hub => "hub",
            Contender::Axum => "axum",
            Contender::BroadcastSseBody => "broadcast+SseBody",
        }
    }

    /// The wire size of event `id` as this contender writes it.
    fn event_len(self, id: u64) -> u64 {
        let plain = format!("data: {DATA}\n\n").len() as u64;
        match self {
            // The hub's ids are `EPOCH-N`, the epoch eight hex digits.
            Contender::Hub => plain + format!("id: 00000000-{id}\n").len() as u64,
            Contender::Axum | Contender::BroadcastSseBody => plain,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Burst,
    Live,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Burst => "burst",
            Scenario::Live => "live",
        }
    }
}

/// In the live scenario, counts the frames the subscribers received (one event each, as the
/// next event waits for every subscriber), and wakes the publisher when the last subscriber
/// has the latest event.
struct Progress {
    live: bool,
    delivered: AtomicU64,
    subscribers: u64,
    round_done: Notify,
}

impl Progress {
    fn received_frame(&self) {
        if self.live {
            let total = self.delivered.fetch_add(1, Ordering::AcqRel) + 1;
            if total % self.subscribers == 0 {
                self.round_done.notify_one();
            }
        }
    }
}

/// Polls the body's frames to the end; returns the bytes received.
async fn drain<B>(body: B, progress: Arc<Progress>) -> u64
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut body = pin!(body);
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        let data = frame
            .expect("the body failed")
            .into_data()
            .unwrap_or_default();
        bytes += data.len() as u64;
        progress.received_frame();
    }
    bytes
}

/// One subscriber's stream of a broadcast channel; ends when the sender is gone.
fn broadcast_stream<T>(
    receiver: broadcast::Receiver<Arc<str>>,
    encode: fn(&str) -> T,
) -> impl Stream<Item = Result<T, Infallible>> + Send + 'static
where
    T: Send + 'static,
{
    stream::unfold(receiver, move |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(text) => return Some((Ok(encode(&text)), receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn axum_event(text: &str) -> AxumEvent {
    AxumEvent::default().data(text)
}

fn tower_event(text: &str) -> Event {
    Event::new().data(text)
}

/// The publishing side of a contender.
enum Publisher {
    Hub(Topic),
    Broadcast(broadcast::Sender<Arc<str>>),
}

impl Publisher {
    fn publish(&self, message: &Arc<str>) {
        match self {
            Publisher::Hub(topic) => {
                // In memory a publish is done when called; the future only carries the id.
                let published =
                    futures::FutureExt::now_or_never(topic.publish(tower_event(message)));
                assert!(matches!(published, Some(Ok(_))));
            }
            Publisher::Broadcast(sender) => {
                let _ = sender.send(Arc::clone(message));
            }
        }
    }
}

/// Runs one round; returns the seconds from the first publish until every subscriber's body
/// ended.
async fn round(contender: Contender, scenario: Scenario, subscribers: u64, events: u64) -> f64 {
    let progress = Arc::new(Progress {
        live: scenario == Scenario::Live,
        delivered: AtomicU64::new(0),
        subscribers,
        round_done: Notify::new(),
    });
    let capacity = events as usize;
    let (publisher, mut drains) = match contender {
        Contender::Hub => {
            let hub = Hub::builder()
                .max_events(capacity)
                .max_bytes(usize::MAX)
                .build();
            let topic = hub.topic("bench");
            let drains: Vec<_> = (0..subscribers)
                .map(|_| {
                    let body = SseBody::new(topic.subscribe());
                    tokio::spawn(drain(body, Arc::clone(&progress)))
                })
                .collect();
            // The topic ends once the publisher's handle is dropped.
            drop(hub);
            (Publisher::Hub(topic), drains)
        }
        Contender::Axum | Contender::BroadcastSseBody => {
            let (sender, _) = broadcast::channel(capacity);
            let drains: Vec<_> = (0..subscribers)
                .map(|_| {
                    let receiver = sender.subscribe();
                    let progress = Arc::clone(&progress);
                    if contender == Contender::Axum {
                        let stream = broadcast_stream(receiver, axum_event);
                        let body = Sse::new(stream).into_response().into_body();
                        tokio::spawn(drain(body, progress))
                    } else {
                        let body = SseBody::new(broadcast_stream(receiver, tower_event));
                        tokio::spawn(drain(body, progress))
                    }
                })
                .collect();
            (Publisher::Broadcast(sender), drains)
        }
    };
    // Let every subscriber reach its first poll and wait.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let message: Arc<str> = DATA.into();
    let start = Instant::now();
    for n in 1..=events {
        publisher.publish(&message);
        if scenario == Scenario::Live {
            while progress.delivered.load(Ordering::Acquire) < n * subscribers {
                progress.round_done.notified().await;
            }
        }
    }
    drop(publisher);
    let mut bytes = Vec::new();
    for drain in drains.drain(..) {
        bytes.push(drain.await.expect("a subscriber task panicked"));
    }
    let seconds = start.elapsed().as_secs_f64();
    let expected: u64 = (1..=events).map(|id| contender.event_len(id)).sum();
    assert!(
        bytes.iter().all(|&got| got == expected),
        "{}: a subscriber missed events",
        contender.name()
    );
    seconds
}

/// Bytes per idle subscriber: the heap its body leaves live, the body itself included (boxed
/// here; in a server it lives inline in the connection's task), after one poll that registered
/// it for the next event. Also returns the allocations per subscriber and the body's own size.
fn idle_cost<B: Body>(mut make: impl FnMut() -> B) -> (f64, f64, usize) {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut park = |body: B| {
        let mut body = Box::pin(body);
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        body
    };
    drop(park(make())); // first-use allocations of the channel are not per subscriber
    let mut bodies = Vec::with_capacity(IDLE_SUBSCRIBERS);
    let ((), heap) = support::measure(|| {
        for _ in 0..IDLE_SUBSCRIBERS {
            bodies.push(park(make()));
        }
    });
    drop(bodies);
    let per_subscriber = |total: f64| total / IDLE_SUBSCRIBERS as f64;
    (
        per_subscriber(heap.live_bytes as f64),
        per_subscriber(heap.allocations as f64),
        std::mem::size_of::<B>(),
    )
}

fn idle_memory(contender: Contender) -> (f64, f64, usize) {
    let hub = Hub::new();
    let topic = hub.topic("idle");
    let (sender, _) = broadcast::channel::<Arc<str>>(1024);
    match contender {
        Contender::Hub => idle_cost(|| SseBody::new(topic.subscribe())),
        Contender::Axum => idle_cost(|| {
            let stream = broadcast_stream(sender.subscribe(), axum_event);
            Sse::new(stream).into_response().into_body()
        }),
        Contender::BroadcastSseBody => {
            idle_cost(|| SseBody::new(broadcast_stream(sender.subscribe(), tower_event)))
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let subscribers = env_number("FANOUT_SUBSCRIBERS", 1_000);
    let rounds = env_number("FANOUT_ROUNDS", 5) as usize;
    let scenarios = [
        (Scenario::Burst, env_number("FANOUT_EVENTS", 10_000)),
        (Scenario::Live, env_number("FANOUT_LIVE_EVENTS", 2_000)),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "fanout: {subscribers} subscribers, {DATA:?} events, 2 worker threads, median of {rounds} rounds"
    );
    println!();
    println!("| scenario | contender | events | delivered events/s | vs axum |");
    println!("|---|---|---:|---:|---:|");
    for (scenario, events) in scenarios {
        let mut samples = Contender::ALL.map(|_| Vec::new());
        for _ in 0..rounds {
            for (contender, samples) in Contender::ALL.into_iter().zip(&mut samples) {
                // The publisher runs as a task, as in a server, so its wakes stay on the workers.
                let round = runtime.spawn(round(contender, scenario, subscribers, events));
                let seconds = runtime.block_on(round).expect("the round panicked");
                samples.push(seconds);
            }
        }
        let rates = samples.map(|mut samples| (subscribers * events) as f64 / median(&mut samples));
        let axum = rates[1];
        for (contender, rate) in Contender::ALL.into_iter().zip(rates) {
            println!(
                "| {} | {} | {events} | {:.2} M | {:.2}x |",
                scenario.name(),
                contender.name(),
                rate / 1e6,
                rate / axum
            );
        }
    }
    println!();
    println!("| contender | bytes per idle subscriber (body included) | allocations | body size |");
    println!("|---|---:|---:|---:|");
    for contender in Contender::ALL {
        let (bytes, allocations, body) = idle_memory(contender);
        println!(
            "| {} | {bytes:.0} | {allocations:.1} | {body} |",
            contender.name()
        );
    }
}
