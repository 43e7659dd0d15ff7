//! Scale-out cost: the hub on Redis Streams against the in-memory hub, in the same run.
//!
//! * `memory`: one in-memory hub, 3 x 1,000 subscribers of one topic.
//! * `redis`: three hubs (nodes) on one `redis-server` on loopback, 1,000 subscribers each;
//!   the publishers take the nodes in turn, and each node's reader fans out what Redis holds.
//!
//! Each subscriber is a task that reads its `Subscriber` stream, as a response body would.
//! Two phases per contender:
//!
//! * `throughput`: `EVENTS` events published by 16 concurrent publishers; deliveries per
//!   second until every subscriber has every event.
//! * `latency`: one event at a time, the next once every subscriber has the previous one:
//!   from the publish call to the last subscriber's receipt, p50 and p99.
//!
//! For Redis, `INFO commandstats` before and after the throughput phase gives the commands per
//! published event (`XADD`, and the readers' `XREAD`s).
//!
//!     cargo bench --features redis --bench redis_fanout
//!
//! `REDIS_FANOUT_EVENTS` and `REDIS_FANOUT_LATENCY_EVENTS` change the defaults (5,000 and 300).
//! Needs `redis-server` (Debian's); without it the bench says so and exits.

#[path = "../tests/redis_server/mod.rs"]
mod redis_server;

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use redis_server::RedisServer;
use tokio::sync::Notify;
use tower_sse::{Event, Hub, Topic};

const NODES: usize = 3;
const PER_NODE: usize = 1_000;
const PUBLISHERS: usize = 16;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |value| value.parse().expect(name))
}

/// What the subscribers report: per event, how many have it, and when the last one got it.
struct Tally {
    received: Vec<AtomicU32>,
    completed: Mutex<Vec<Option<Instant>>>,
    all: u32,
    done: Notify,
}

impl Tally {
    fn new(events: usize, subscribers: usize) -> Arc<Tally> {
        Arc::new(Tally {
            received: (0..events).map(|_| AtomicU32::new(0)).collect(),
            completed: Mutex::new(vec![None; events]),
            all: subscribers as u32,
            done: Notify::new(),
        })
    }

    fn got(&self, index: usize) {
        if self.received[index].fetch_add(1, Ordering::AcqRel) + 1 == self.all {
            self.completed.lock().unwrap()[index] = Some(Instant::now());
            self.done.notify_waiters();
        }
    }

    async fn wait(&self, index: usize) -> Instant {
        loop {
            let done = self.done.notified();
            if let Some(at) = self.completed.lock().unwrap()[index] {
                return at;
            }
            done.await;
        }
    }
}

/// Starts one task per subscriber of each topic; each reports every event (its data is its
/// index in the phase) to the tally, and ends after `events` of them.
fn subscribe(topics: &[Topic], per_topic: usize, events: usize, tally: &Arc<Tally>) {
    for topic in topics {
        for _ in 0..per_topic {
            let mut subscriber = topic.subscribe();
            let tally = Arc::clone(tally);
            tokio::spawn(async move {
                for _ in 0..events {
                    let Some(Ok(event)) = subscriber.next().await else {
                        panic!("a subscriber ended early");
                    };
                    let bytes = event.to_bytes();
                    let text = std::str::from_utf8(&bytes).unwrap();
                    let data = text.strip_prefix("data: ").expect("a data event");
                    let index: usize = data[..data.find('\n').unwrap()].parse().unwrap();
                    tally.got(index);
                }
            });
        }
    }
}

/// Deliveries per second of `events` published at once by concurrent publishers.
async fn throughput(topics: &[Topic], per_topic: usize, events: usize) -> f64 {
    let subscribers = topics.len() * per_topic;
    let tally = Tally::new(events, subscribers);
    subscribe(topics, per_topic, events, &tally);
    tokio::task::yield_now().await;
    let started = Instant::now();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let topics = topics.to_vec();
            tokio::spawn(async move {
                for index in (p..events).step_by(PUBLISHERS) {
                    let topic = &topics[index % topics.len()];
                    topic
                        .publish(Event::new().data(index.to_string()))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut last = started;
    for index in 0..events {
        last = last.max(tally.wait(index).await);
    }
    (events * subscribers) as f64 / (last - started).as_secs_f64()
}

/// From publish to the last subscriber's receipt, one event at a time: p50 and p99.
async fn latency(
    topics: &[Topic],
    per_topic: usize,
    latency_events: usize,
) -> (Duration, Duration) {
    let subscribers = topics.len() * per_topic;
    let tally = Tally::new(latency_events, subscribers);
    subscribe(topics, per_topic, latency_events, &tally);
    tokio::task::yield_now().await;
    let mut latencies = Vec::with_capacity(latency_events);
    for index in 0..latency_events {
        let topic = &topics[index % topics.len()];
        let sent = Instant::now();
        topic
            .publish(Event::new().data(index.to_string()))
            .await
            .unwrap();
        latencies.push(tally.wait(index).await - sent);
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn report(name: &str, deliveries_per_second: f64, (p50, p99): (Duration, Duration)) {
    println!(
        "{name:<8} {deliveries_per_second:>12.0} deliveries/s   publish -> last subscriber \
         p50 {p50:>8.2?} p99 {p99:>8.2?}"
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|arg| arg == "--list" || arg == "--test") {
        return; // `cargo test --benches` / listing: nothing to run here
    }
    let events = setting("REDIS_FANOUT_EVENTS", 5_000);
    let latency_events = setting("REDIS_FANOUT_LATENCY_EVENTS", 300);
    let Some(redis) = RedisServer::start() else {
        return;
    };
    println!(
        "{NODES} nodes x {PER_NODE} subscribers; {events} events ({PUBLISHERS} publishers), then \
         {latency_events} one at a time"
    );

    let memory = [Hub::builder().max_events(events).build().topic("feed")];
    let rate = throughput(&memory, NODES * PER_NODE, events).await;
    report(
        "memory",
        rate,
        latency(&memory, NODES * PER_NODE, latency_events).await,
    );

    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let hub = Hub::builder()
            .max_events(events)
            .redis(redis.client())
            .build();
        let topic = hub.topic("feed");
        topic.ready().await;
        nodes.push(topic);
    }
    let count = || async {
        (
            redis.calls("xadd").await,
            redis.calls("xread").await,
            redis.calls("*").await,
        )
    };
    let before = count().await;
    let rate = throughput(&nodes, PER_NODE, events).await;
    let after = count().await;
    report(
        "redis",
        rate,
        latency(&nodes, PER_NODE, latency_events).await,
    );
    let all = after.2 - before.2;
    println!(
        "redis    per published event: {:.3} XADD, {:.3} XREAD per node ({} XREADs by {NODES} \
         readers), {:.3} commands in all, while publishing at full speed",
        (after.0 - before.0) as f64 / events as f64,
        (after.1 - before.1) as f64 / events as f64 / NODES as f64,
        after.1 - before.1,
        all as f64 / events as f64,
    );
}
