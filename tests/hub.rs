//! The broadcast `Hub`: every subscriber gets every event in order, or is told exactly how many
//! it missed per the lag policy; a stalled client never holds up the others.

mod common;

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use common::{get, read_body, serve, Proto};
use futures::{FutureExt, Stream, StreamExt};
use http_body_util::BodyExt;
use tower_sse::{Event, Hub, LagPolicy, LastEventId, SseBody, Subscriber, Topic};

/// Publishes to an in-memory topic, which is done at once.
fn publish(topic: &Topic, event: impl Into<Event>) -> LastEventId {
    topic
        .publish(event)
        .now_or_never()
        .expect("an in-memory publish is done at once")
        .expect("an in-memory publish never fails")
}

/// The number of an in-memory topic's id (`EPOCH-N`).
fn number(id: &str) -> u64 {
    let (epoch, n) = id.split_once('-').unwrap();
    assert!(!epoch.is_empty(), "{id:?}");
    n.parse().unwrap()
}

/// What a subscriber yielded, decoded from the event's exact wire form.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    /// A published event: its id (the data repeats it).
    Event(u64),
    /// A lag notice (`resync` or `lagged`) with the number of events missed.
    Notice(String, u64),
}

fn decode(event: &Event) -> Item {
    let bytes = event.to_bytes();
    let text = std::str::from_utf8(&bytes).unwrap();
    let body = text.strip_suffix("\n\n").unwrap();
    let (mut id, mut name, mut data) = (None, None, None);
    for line in body.split('\n') {
        let (field, value) = line.split_once(": ").unwrap();
        let slot = match field {
            "id" => &mut id,
            "event" => &mut name,
            "data" => &mut data,
            _ => panic!("unexpected line {line:?}"),
        };
        assert!(slot.replace(value).is_none(), "repeated field in {text:?}");
    }
    let data = data.unwrap();
    match (id, name) {
        (Some(id), None) => {
            assert_eq!(number(id).to_string(), data, "event {text:?}");
            Item::Event(number(id))
        }
        (None, Some(name)) => Item::Notice(name.to_owned(), data.parse().unwrap()),
        _ => panic!("unexpected event {text:?}"),
    }
}

/// Checks what one subscriber received, in order, as it arrives.
///
/// `published` is how many events the topic had when the item was read, which tells exactly
/// which events the topic's log still held (`max_events` of them, bytes being no limit here).
struct Checker {
    next: u64,
    max_events: u64,
    policy: LagPolicy,
    notices: u64,
    ended: bool,
}

impl Checker {
    fn new(max_events: u64, policy: LagPolicy) -> Self {
        Checker {
            next: 1,
            max_events,
            policy,
            notices: 0,
            ended: false,
        }
    }

    /// Takes one item read while the topic had published `published` events. Returns whether
    /// the subscriber may yield more.
    fn take(&mut self, item: Item, published: u64) -> bool {
        assert!(!self.ended, "item {item:?} after the final notice");
        let first_retained = published.saturating_sub(self.max_events) + 1;
        match item {
            Item::Event(id) => {
                assert_eq!(id, self.next, "gap or duplicate");
                self.next += 1;
                true
            }
            Item::Notice(name, missed) => {
                self.notices += 1;
                assert_eq!(missed, first_retained - self.next, "wrong missed count");
                assert!(missed > 0);
                match self.policy {
                    LagPolicy::Resync => {
                        assert_eq!(name, "resync");
                        self.next = first_retained;
                        true
                    }
                    _ => {
                        assert_eq!(name, "lagged");
                        self.ended = true;
                        false
                    }
                }
            }
        }
    }
}

/// Polls the subscriber without a task: `Some(item)` when one is ready, `None` when it waits.
/// `expected` is the wire form of the event it should yield if it kept up (a shortcut past
/// decoding in the common case).
fn poll_ready(subscriber: &mut Subscriber, expected: &[u8]) -> Option<Option<Item>> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match Pin::new(subscriber).poll_next(&mut cx) {
        Poll::Ready(Some(Ok(event))) if event.to_bytes() == expected => {
            Some(Some(decode_expected(expected)))
        }
        Poll::Ready(Some(Ok(event))) => Some(Some(decode(&event))),
        Poll::Ready(None) => Some(None),
        Poll::Pending => None,
    }
}

/// The wire form of published event `n` (whose data is its number), as a client must see it.
fn wire(epoch: &str, n: u64) -> Vec<u8> {
    format!("data: {n}\nid: {epoch}-{n}\n\n").into_bytes()
}

fn decode_expected(expected: &[u8]) -> Item {
    let text = std::str::from_utf8(expected).unwrap();
    let id = text["data: ".len()..].split('\n').next().unwrap();
    Item::Event(id.parse().unwrap())
}

/// 1,000 subscribers x 10,000 events, driven in lockstep so every read happens at a known
/// point: nine in ten read everything as it comes; the others read only now and then, each at
/// its own pace, so most of them fall behind the log. Every subscriber must get every event in
/// order, or be told exactly how many it missed, per the policy.
fn fan_out_in_lockstep(policy: LagPolicy) {
    const SUBSCRIBERS: usize = 1_000;
    const EVENTS: u64 = 10_000;
    const MAX_EVENTS: u64 = 256;
    let hub = Hub::builder()
        .max_events(MAX_EVENTS as usize)
        .max_bytes(usize::MAX)
        .lag_policy(policy)
        .build();
    let topic = hub.topic("lockstep");
    let mut subscribers: Vec<(Subscriber, Checker)> = (0..SUBSCRIBERS)
        .map(|_| (topic.subscribe(), Checker::new(MAX_EVENTS, policy)))
        .collect();
    assert_eq!(hub.subscriber_count("lockstep"), SUBSCRIBERS);

    let mut wires: Vec<Vec<u8>> = Vec::new();
    let drain =
        |subscriber: &mut Subscriber, checker: &mut Checker, published: u64, wires: &[Vec<u8>]| {
            while let Some(item) = poll_ready(subscriber, &wires[checker.next as usize]) {
                match item {
                    Some(item) => {
                        if !checker.take(item, published) {
                            let end = poll_ready(subscriber, &[]);
                            assert_eq!(end, Some(None), "no end after the notice");
                            return;
                        }
                    }
                    None => return,
                }
            }
        };
    for published in 1..=EVENTS {
        let id = publish(&topic, published.to_string());
        assert_eq!(number(id.as_str()), published);
        if wires.is_empty() {
            let (epoch, _) = id.as_str().split_once('-').unwrap();
            wires = (0..=EVENTS + 1).map(|n| wire(epoch, n)).collect();
        }
        for (i, (subscriber, checker)) in subscribers.iter_mut().enumerate() {
            let slow = i % 10 == 0;
            // Slow subscriber `i` reads every 50 + i events: some keep up, most lag.
            if !checker.ended && (!slow || published % (50 + i as u64) == 0) {
                drain(subscriber, checker, published, &wires);
            }
        }
    }
    drop(topic);
    assert!(hub.remove("lockstep"));
    let mut lagged = 0;
    for (i, (subscriber, checker)) in subscribers.iter_mut().enumerate() {
        if !checker.ended {
            drain(subscriber, checker, EVENTS, &wires);
        }
        if checker.notices == 0 {
            assert_eq!(checker.next, EVENTS + 1, "subscriber {i} missed the end");
            let end = poll_ready(subscriber, &[]);
            assert_eq!(end, Some(None), "subscriber {i} did not end");
        } else {
            lagged += 1;
            assert!(i % 10 == 0, "fast subscriber {i} was told it lagged");
            if policy == LagPolicy::Resync {
                assert_eq!(checker.next, EVENTS + 1, "subscriber {i} missed the end");
            }
        }
    }
    // A slow subscriber lags exactly when its pace exceeds what the log holds.
    let expected = (0..SUBSCRIBERS as u64)
        .filter(|i| i % 10 == 0 && 50 + i > MAX_EVENTS)
        .count();
    assert!(expected > 0);
    assert_eq!(lagged, expected, "{policy:?}");
}

#[test]
fn thousand_subscribers_ten_thousand_events_resync() {
    fan_out_in_lockstep(LagPolicy::Resync);
}

#[test]
fn thousand_subscribers_ten_thousand_events_disconnect() {
    fan_out_in_lockstep(LagPolicy::Disconnect);
}

/// The same on a multi-threaded runtime, each subscriber a task: publishing and reading race
/// freely, and some subscribers pause until the log has moved past them. With `Resync`, a
/// subscriber's sequence is consecutive, and a notice of `n` missed events is followed by
/// exactly the `n + 1`-th next id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_subscribers_see_every_event_or_an_exact_resync() {
    const SUBSCRIBERS: u64 = 200;
    const EVENTS: u64 = 5_000;
    const MAX_EVENTS: u64 = 256;
    let hub = Hub::builder().max_events(MAX_EVENTS as usize).build();
    let topic = hub.topic("race");
    let published = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut subscriber = topic.subscribe();
        let published = Arc::clone(&published);
        tasks.push(tokio::spawn(async move {
            let mut next = 1;
            let mut notices = 0;
            while let Some(Ok(event)) = subscriber.next().await {
                match decode(&event) {
                    Item::Event(id) => {
                        assert_eq!(id, next, "gap or duplicate");
                        next += 1;
                        if i % 20 == 0 && id % 1_000 == 0 {
                            // Stall until the log no longer holds the next event.
                            let behind = (id + 2 * MAX_EVENTS).min(EVENTS);
                            while published.load(Ordering::Acquire) < behind {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                    }
                    Item::Notice(name, missed) => {
                        assert_eq!(name, "resync");
                        notices += 1;
                        next += missed;
                    }
                }
            }
            assert_eq!(next, EVENTS + 1, "subscriber {i} missed the end");
            if i % 20 == 0 {
                assert!(
                    notices > 0,
                    "subscriber {i} paused but was not told it lagged"
                );
            }
        }));
    }
    // Ten events a millisecond: a pace the subscribers that do not pause keep up with.
    for id in 1..=EVENTS {
        publish(&topic, id.to_string());
        published.store(id, Ordering::Release);
        if id % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    drop(topic);
    hub.remove("race");
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a subscriber did not end after its topic")
            .unwrap();
    }
}

/// Serves each request a subscriber of the hub's "feed" topic.
async fn serve_hub(hub: Hub) -> std::net::SocketAddr {
    serve(move |_request| {
        let subscriber = hub.topic("feed").subscribe();
        async move { tower_sse::response(SseBody::new(subscriber)) }
    })
    .await
}

async fn wait_for_subscribers(hub: &Hub, count: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while hub.subscriber_count("feed") < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("subscribers did not arrive");
}

/// Real clients over HTTP/1.1 and HTTP/2 each receive every event exactly once, in order, and a
/// clean end once the topic is gone; the subscriber count follows connections coming and going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_clients_receive_every_event_in_order() {
    const CLIENTS: usize = 20;
    const EVENTS: u64 = 2_000;
    let hub = Hub::builder().max_events(EVENTS as usize).build();
    let addr = serve_hub(hub.clone()).await;
    let mut readers = Vec::new();
    for i in 0..CLIENTS {
        let proto = if i % 2 == 0 {
            Proto::Http1
        } else {
            Proto::Http2
        };
        let (client, response) = get(addr, proto, "/").await;
        readers.push(tokio::spawn(async move {
            let received = read_body(response.into_body()).await;
            drop(client);
            received
        }));
    }
    wait_for_subscribers(&hub, CLIENTS).await;
    let topic = hub.topic("feed");
    for id in 1..=EVENTS {
        publish(&topic, id.to_string());
        if id % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    drop(topic);
    hub.remove("feed");
    for reader in readers {
        let received = reader.await.unwrap();
        assert!(received.error.is_none(), "{:?}", received.error);
        let events = received.events();
        let ids: Vec<u64> = events.iter().map(|e| e.data.parse().unwrap()).collect();
        assert_eq!(ids, (1..=EVENTS).collect::<Vec<_>>());
        assert!(events
            .iter()
            .all(|e| number(&e.last_event_id).to_string() == e.data));
    }
    assert_eq!(hub.subscriber_count("feed"), 0);
}

/// A client that stops reading never holds up the publisher or the other clients: they get
/// everything while it is stalled; when it finally reads, it gets a consecutive prefix, then
/// the final `lagged` notice with the exact count, then a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_is_disconnected_without_slowing_the_others() {
    const EVENTS: u64 = 6_000;
    const MAX_EVENTS: usize = 256;
    let hub = Hub::builder()
        .max_events(MAX_EVENTS)
        .lag_policy(LagPolicy::Disconnect)
        .build();
    let addr = serve_hub(hub.clone()).await;
    let (stalled_client, stalled) = get(addr, Proto::Http1, "/").await;
    let mut fast = Vec::new();
    for proto in [Proto::Http1, Proto::Http2] {
        let (client, response) = get(addr, proto, "/").await;
        fast.push(tokio::spawn(async move {
            let received = read_body(response.into_body()).await;
            drop(client);
            received
        }));
    }
    wait_for_subscribers(&hub, 3).await;
    let topic = hub.topic("feed");
    // 2 KiB events: far more than socket buffers hold, so the stalled client must fall behind.
    let padding = "x".repeat(2048);
    let fast_reader = async {
        for id in 1..=EVENTS {
            publish(&topic, Event::new().data(id.to_string()).comment(&padding));
            if id % 20 == 0 {
                // Pace the publisher to the fast clients, as a live feed would be.
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), fast_reader)
        .await
        .expect("publishing was held up");
    let last_id = number(topic.last_id().unwrap().as_str());
    drop(topic);
    hub.remove("feed");
    for reader in fast {
        let received = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("a fast client was held up by the stalled one")
            .unwrap();
        let ids: Vec<u64> = received
            .events()
            .iter()
            .map(|e| e.data.parse().unwrap())
            .collect();
        assert_eq!(ids, (1..=EVENTS).collect::<Vec<_>>());
    }
    // Now the stalled client reads.
    let received = read_body(stalled.into_body()).await;
    drop(stalled_client);
    assert!(received.error.is_none(), "{:?}", received.error);
    let events = received.events();
    let (notice, prefix) = events.split_last().unwrap();
    assert_eq!(notice.event, "lagged");
    let ids: Vec<u64> = prefix.iter().map(|e| e.data.parse().unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    // The notice counts exactly the events between the last one received and the oldest one
    // the log held when the lag was found, which is at most the oldest one it holds at the end.
    let missed: u64 = notice.data.parse().unwrap();
    let next = ids.len() as u64 + 1;
    assert!(missed > 0);
    assert!(next + missed <= last_id - MAX_EVENTS as u64 + 1);
}

/// A subscriber is a plain stream of shared events: a fresh subscriber of a topic with history
/// starts live (no replay), and every subscriber's copy of an event is the same encoding.
#[tokio::test]
async fn subscribers_share_one_encoding() {
    let hub = Hub::new();
    let topic = hub.topic("shared");
    let before = publish(&topic, "before");
    let epoch = before.as_str().split_once('-').unwrap().0.to_owned();
    let mut first = topic.subscribe();
    let mut second = hub.topic("shared").subscribe();
    assert_eq!(topic.subscriber_count(), 2);
    publish(&topic, Event::new().id("ignored").unwrap().data("after"));
    let a = first.next().await.unwrap().unwrap().to_bytes();
    let b = second.next().await.unwrap().unwrap().to_bytes();
    assert_eq!(a, format!("data: after\nid: {epoch}-2\n\n"));
    assert_eq!(a.as_ptr(), b.as_ptr(), "each subscriber got its own copy");
    drop(second);
    assert_eq!(topic.subscriber_count(), 1);
    assert_eq!(first.topic(), "shared");
    let mut body = SseBody::new(first);
    publish(&topic, "third");
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(frame, format!("data: third\nid: {epoch}-3\n\n"));
}

/// What a topic holds is its log, bounded by `max_bytes`, plus what each subscriber took ahead:
/// at most `Subscriber::READ_AHEAD` events, which it still sends (in order) before the notice
/// of what the log evicted meanwhile.
#[test]
fn a_topic_holds_its_log_plus_at_most_read_ahead_events_per_subscriber() {
    let size = wire("00000000", 1000).len();
    let hub = Hub::builder()
        .max_events(usize::MAX)
        .max_bytes(100 * size)
        .build();
    let topic = hub.topic("bounded");
    let mut subscriber = topic.subscribe();
    for n in 1..=100 {
        publish(&topic, n.to_string());
    }
    // The first read takes READ_AHEAD events: everything else is the log's.
    let mut received = Vec::new();
    assert_eq!(poll_ready(&mut subscriber, &[]), Some(Some(Item::Event(1))));
    for n in 101..=2000 {
        publish(&topic, n.to_string());
    }
    while let Some(Some(item)) = poll_ready(&mut subscriber, &[]) {
        let notice = matches!(item, Item::Notice(..));
        received.push(item);
        if notice {
            break;
        }
    }
    let ahead = Subscriber::READ_AHEAD as u64;
    let want: Vec<Item> = (2..=ahead).map(Item::Event).collect();
    assert_eq!(received[..received.len() - 1], want[..]);
    // The log held the last 100 events (each of `size` bytes), no more.
    assert_eq!(
        received.last(),
        Some(&Item::Notice("resync".into(), 1901 - (ahead + 1)))
    );
    assert_eq!(
        poll_ready(&mut subscriber, &[]),
        Some(Some(Item::Event(1901)))
    );
}

/// The hub's own notices carry the names the builder gave them; a name that would inject a
/// line is a typed error.
#[test]
fn notice_names_are_configurable() {
    for policy in [LagPolicy::Resync, LagPolicy::Disconnect] {
        let hub = Hub::builder()
            .max_events(2)
            .lag_policy(policy)
            .resync_event("catch-up")
            .unwrap()
            .lagged_event("too-slow")
            .unwrap()
            .build();
        let topic = hub.topic("named");
        let mut subscriber = topic.subscribe();
        for n in 1..=5 {
            publish(&topic, n.to_string());
        }
        let name = match policy {
            LagPolicy::Resync => "catch-up",
            _ => "too-slow",
        };
        assert_eq!(
            poll_ready(&mut subscriber, &[]),
            Some(Some(Item::Notice(name.into(), 3)))
        );
    }
    assert!(Hub::builder().resync_event("a\nb").is_err());
    assert!(Hub::builder().lagged_event("a\rb").is_err());
}
