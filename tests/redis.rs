//! The hub on Redis Streams, against a real `redis-server` that each test starts on a free
//! loopback port: several nodes (hubs) share each topic, clients resume on any node, and
//! faults (Redis killed and restarted, a reader's connection killed, `FLUSHALL`, trimming) end
//! in a resume or the documented resync, never in a silent gap or wrong events.
#![cfg(feature = "redis")]

mod common;
mod redis_server;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use common::{read_body, serve};
use futures::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use redis_server::RedisServer;
use tokio::{net::TcpStream, sync::Mutex, task::JoinHandle};
use tower_sse::{Event, Hub, LagPolicy, LastEventId, MessageEvent, SseBody, Subscriber, Topic};

/// Generous: the machine may be busy; a hang is what these catch.
const PATIENCE: Duration = Duration::from_secs(60);

/// One server of the fleet: a hub on the shared Redis and its `/` endpoint, which streams the
/// topic `feed` resumed after the request's `Last-Event-ID`, ending after `?limit=N` events.
struct Node {
    topic: Topic,
    addr: SocketAddr,
}

async fn node(redis: &RedisServer, max_events: usize) -> Node {
    node_with(redis, Hub::builder().max_events(max_events)).await
}

async fn node_with(redis: &RedisServer, builder: tower_sse::HubBuilder) -> Node {
    let node = starting_node(redis.client(), builder).await;
    tokio::time::timeout(PATIENCE, node.topic.ready())
        .await
        .expect("the node never followed the stream");
    node
}

/// A node that serves at once, whether or not it could reach Redis yet.
async fn starting_node(client: redis::Client, builder: tower_sse::HubBuilder) -> Node {
    let hub = builder.redis(client).build();
    let topic = hub.topic("feed");
    let served = topic.clone();
    let addr = serve(move |request: Request<Incoming>| {
        let last = LastEventId::from_headers(request.headers()).unwrap();
        let limit = request
            .uri()
            .query()
            .and_then(|query| query.strip_prefix("limit="))
            .map_or(usize::MAX, |limit| limit.parse().unwrap());
        let events = served.resume(last.as_ref()).take(limit);
        async move { tower_sse::response(SseBody::new(events)) }
    })
    .await;
    Node { topic, addr }
}

/// `GET path` on a fresh HTTP/1.1 connection, with `Last-Event-ID: last` if given.
async fn get(addr: SocketAddr, path: &str, last: Option<&str>) -> Response<Incoming> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", "127.0.0.1");
    if let Some(last) = last {
        request = request.header("last-event-id", HeaderValue::from_str(last).unwrap());
    }
    send.send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap()
}

/// Reads a whole response (it ends after its `limit`) and decodes its events.
async fn events(addr: SocketAddr, path: &str, last: Option<&str>) -> Vec<MessageEvent> {
    let response = get(addr, path, last).await;
    assert_eq!(response.status(), StatusCode::OK);
    let received = tokio::time::timeout(PATIENCE, read_body(response.into_body()))
        .await
        .expect("the stream did not deliver its events");
    assert!(received.error.is_none(), "{:?}", received.error);
    received.events()
}

/// `(id, data)` of each event.
fn pairs(events: &[MessageEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|event| (event.last_event_id.clone(), event.data.clone()))
        .collect()
}

/// The stream id part of an SSE id (`EPOCH-MS-SEQ`), as numbers, and the epoch.
fn parse_id(id: &str) -> (&str, (u64, u64)) {
    let mut parts = id.splitn(3, '-');
    let epoch = parts.next().unwrap();
    let ms = parts.next().unwrap().parse().unwrap();
    let seq = parts.next().unwrap().parse().unwrap();
    (epoch, (ms, seq))
}

async fn wait_for_subscribers(topic: &Topic, count: usize) {
    tokio::time::timeout(PATIENCE, async {
        while topic.subscriber_count() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the clients did not subscribe");
}

/// Collects what a subscriber yields until an event whose data is `end`.
fn collect_until_end(mut subscriber: Subscriber) -> JoinHandle<Vec<Bytes>> {
    tokio::spawn(async move {
        let mut received = Vec::new();
        while let Some(Ok(event)) = subscriber.next().await {
            let bytes = event.to_bytes();
            let end = bytes.windows(10).any(|w| w == b"data: end\n");
            received.push(bytes);
            if end {
                break;
            }
        }
        received
    })
}

/// The data line of an event's wire form.
fn data_of(event: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(event).unwrap();
    text.lines().find_map(|line| line.strip_prefix("data: "))
}

/// Three nodes on one Redis, each publishing concurrently, four socket clients on each: every
/// client gets every event once, in one order that is the same on every node, with the same
/// ids, and each node's events in the order it published them. Publishing is one `XADD` each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_event_once_in_order() {
    const PER_NODE: usize = 100;
    const TOTAL: usize = 3 * PER_NODE;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let nodes = [
        node(&redis, 10_000).await,
        node(&redis, 10_000).await,
        node(&redis, 10_000).await,
    ];
    let xadds_before = redis.calls("xadd").await;
    let mut readers = Vec::new();
    for node in &nodes {
        for _ in 0..4 {
            let addr = node.addr;
            readers.push(tokio::spawn(async move {
                events(addr, &format!("/?limit={TOTAL}"), None).await
            }));
        }
    }
    for node in &nodes {
        wait_for_subscribers(&node.topic, 4).await;
    }
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(k, node)| {
            let topic = node.topic.clone();
            tokio::spawn(async move {
                for i in 0..PER_NODE {
                    topic.publish(format!("{k}-{i}")).await.unwrap();
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut sequences = Vec::new();
    for reader in readers {
        sequences.push(pairs(&reader.await.unwrap()));
    }
    let reference = &sequences[0];
    assert_eq!(reference.len(), TOTAL);
    for sequence in &sequences {
        assert_eq!(
            sequence, reference,
            "every client of every node sees one order"
        );
    }
    for k in 0..3 {
        let mine: Vec<String> = reference
            .iter()
            .filter_map(|(_, data)| data.strip_prefix(&format!("{k}-")).map(str::to_owned))
            .collect();
        let want: Vec<String> = (0..PER_NODE).map(|i| i.to_string()).collect();
        assert_eq!(mine, want, "node {k}'s events, once each, in its order");
    }
    let ids: Vec<_> = reference.iter().map(|(id, _)| parse_id(id)).collect();
    assert!(ids.windows(2).all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1));
    assert_eq!(redis.calls("xadd").await - xadds_before, TOTAL as u64);
    drop(nodes);
}

/// 1,000 events published concurrently from two nodes while a client reads 300 from node A,
/// drops, and reconnects to node B with its `Last-Event-ID`: it gets exactly the rest, in
/// order. A node that joins meanwhile resumes the same client from Redis, with no gap and no
/// duplicate where Redis's events meet the node's live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_with_no_gap_and_no_duplicate() {
    const TOTAL: usize = 1_000;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, 10_000).await;
    let b = node(&redis, 10_000).await;
    let witness = node(&redis, 10_000).await;
    let first_part = {
        let addr = a.addr;
        tokio::spawn(async move { events(addr, "/?limit=300", None).await })
    };
    let reference = {
        let addr = witness.addr;
        tokio::spawn(async move { events(addr, &format!("/?limit={TOTAL}"), None).await })
    };
    wait_for_subscribers(&a.topic, 1).await;
    wait_for_subscribers(&witness.topic, 1).await;
    let publishers: Vec<_> = [&a, &b]
        .into_iter()
        .enumerate()
        .map(|(k, node)| {
            let topic = node.topic.clone();
            tokio::spawn(async move {
                for i in 0..TOTAL / 2 {
                    topic.publish(format!("{k}-{i}")).await.unwrap();
                    if i % 50 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect();
    let first_part = pairs(&first_part.await.unwrap());
    assert_eq!(first_part.len(), 300);
    let last = first_part.last().unwrap().0.clone();
    // A node that joins now has none of the first 300 in memory: it reads them from Redis
    // and joins its live log at the seam while the publishers go on, for 40 clients resuming
    // at once (at most a few reads at a time, the others wait their turn).
    let late = node(&redis, 10_000).await;
    let resumes: Vec<_> = (0..40)
        .map(|_| {
            let (addr, last) = (late.addr, last.clone());
            let path = format!("/?limit={}", TOTAL - 300);
            tokio::spawn(async move { pairs(&events(addr, &path, Some(&last)).await) })
        })
        .collect();
    // Reconnect to B, likely while the publishers are still at it.
    let rest = pairs(&events(b.addr, &format!("/?limit={}", TOTAL - 300), Some(&last)).await);
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let reference = pairs(&reference.await.unwrap());
    assert_eq!(reference.len(), TOTAL);
    let mut whole = first_part.clone();
    whole.extend(rest);
    assert_eq!(whole, reference, "the rest, exactly, in order");
    for resumed in resumes {
        assert_eq!(resumed.await.unwrap(), reference[300..]);
    }
    drop((a, b, witness, late));
}

/// Redis is killed (SIGKILL) mid-stream and started again on its append-only file: publishing
/// fails with a typed error while it is away, connected subscribers miss nothing Redis
/// acknowledged, a client connecting meanwhile gets `200` at once and its events once Redis is
/// back, and the readers reconnect within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_loses_nothing_it_acknowledged() {
    const EVENTS: usize = 200;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let redis = Arc::new(Mutex::new(redis));
    let (a, b) = {
        let redis = redis.lock().await;
        (node(&redis, 10_000).await, node(&redis, 10_000).await)
    };
    let on_a = collect_until_end(a.topic.subscribe());
    let on_b = collect_until_end(b.topic.subscribe());
    let publisher = {
        let topic = a.topic.clone();
        tokio::spawn(async move {
            let (mut acknowledged, mut failures) = (Vec::new(), 0);
            for n in 0..=EVENTS {
                for attempt in 0.. {
                    let data = if n == EVENTS {
                        "end".to_owned()
                    } else {
                        format!("{n}-{attempt}")
                    };
                    match topic.publish(data.as_str()).await {
                        Ok(id) => {
                            acknowledged.push((id, data));
                            break;
                        }
                        Err(error) => {
                            assert!(error.to_string().contains("did not acknowledge"));
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (acknowledged, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.lock().await.kill();
    // While Redis is away, a client resuming gets its `200` at once.
    let early = loop {
        // Whatever B has seen so far.
        if let Some(id) = b.topic.last_id() {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // A node that starts now cannot reach Redis: it answers, and waits.
    let client = redis.lock().await.client();
    let c = starting_node(client, Hub::builder().max_events(10_000)).await;
    let waiting = tokio::time::timeout(
        Duration::from_secs(5),
        get(c.addr, "/?limit=5", Some(early.as_str())),
    )
    .await
    .expect("no answer while Redis is away");
    assert_eq!(waiting.status(), StatusCode::OK);
    let waiting = tokio::spawn(read_body(waiting.into_body()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    {
        let mut redis = redis.lock().await;
        tokio::task::block_in_place(|| redis.restart());
    }
    let restarted = std::time::Instant::now();
    let (acknowledged, failures) = tokio::time::timeout(PATIENCE, publisher)
        .await
        .expect("publishing did not resume once Redis was back")
        .unwrap();
    assert!(failures > 0, "publishing never failed while Redis was away");
    let mut caught_up = Vec::new();
    for received in [on_a, on_b] {
        let received = tokio::time::timeout(PATIENCE, received)
            .await
            .expect("a reader did not catch up after the restart")
            .unwrap();
        caught_up.push(restarted.elapsed());
        let data: Vec<&str> = received.iter().filter_map(|e| data_of(e)).collect();
        // Every acknowledged event, once, in order (an event whose acknowledgement was lost
        // with the connection may come too, under its own data).
        let mut at = 0;
        for (_, want) in &acknowledged {
            let found = data[at..].iter().position(|got| got == want);
            let found = found.unwrap_or_else(|| panic!("{want} was acknowledged but missed"));
            at += found + 1;
        }
        let mut unique = data.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), data.len(), "an event came twice");
    }
    // Within a few seconds (the readers retry at least every second), generously bounded.
    assert!(
        caught_up
            .iter()
            .all(|elapsed| *elapsed < Duration::from_secs(20)),
        "{caught_up:?}"
    );
    let resumed = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the client that came while Redis was away got nothing")
        .unwrap()
        .events();
    assert_eq!(resumed.len(), 5);
    assert!(resumed.iter().all(|event| event.event == "message"));
    assert!(parse_id(&resumed[0].last_event_id).1 > parse_id(early.as_str()).1);
    drop((a, b, c));
}

/// `CLIENT KILL` of the nodes' readers while they block in `XREAD`: they reconnect and resume
/// from their last entry, so the subscribers get every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_reader_connection_resumes_where_it_was() {
    const EVENTS: usize = 300;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, 10_000).await;
    let b = node(&redis, 10_000).await;
    let on_b = collect_until_end(b.topic.subscribe());
    let publisher = {
        let topic = a.topic.clone();
        tokio::spawn(async move {
            for n in 0..EVENTS {
                topic.publish(n.to_string()).await.unwrap();
                if n % 100 == 50 {
                    // Quiet for a moment: the readers are blocked in XREAD now.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            topic.publish("end").await.unwrap();
        })
    };
    let mut killed = 0;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let clients: String = redis.command(redis::cmd("CLIENT").arg("LIST")).await;
        for line in clients.lines() {
            if line.contains("name=tower-sse-reader") {
                let id = line.split(' ').find_map(|f| f.strip_prefix("id=")).unwrap();
                let n: u64 = redis
                    .command(redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id))
                    .await;
                killed += n;
            }
        }
    }
    assert!(killed >= 2, "no reader to kill");
    publisher.await.unwrap();
    let received = tokio::time::timeout(PATIENCE, on_b)
        .await
        .expect("the reader did not come back")
        .unwrap();
    let data: Vec<&str> = received.iter().filter_map(|e| data_of(e)).collect();
    let mut want: Vec<String> = (0..EVENTS).map(|n| n.to_string()).collect();
    want.push("end".into());
    assert_eq!(data, want);
    drop((a, b));
}

/// `FLUSHALL` loses the stream: the next publish makes it again in a new epoch. A client that
/// resumes with an id of the old epoch gets the resync notice, then new events, never events
/// picked from the wrong place; a connected subscriber gets what it had, the notice, and the
/// new events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_starts_a_new_epoch_and_old_ids_resync() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, 10_000).await;
    let live = collect_until_end(a.topic.subscribe());
    let mut old = Vec::new();
    for n in 0..10 {
        old.push(a.topic.publish(format!("old-{n}")).await.unwrap());
    }
    let _: () = redis.command(&mut redis::cmd("FLUSHALL")).await;
    let new = a.topic.publish("new-0").await.unwrap();
    assert_ne!(
        parse_id(new.as_str()).0,
        parse_id(old[0].as_str()).0,
        "a new epoch"
    );
    // Resuming with an old id, on this node and on a node that joins now.
    let late = node(&redis, 10_000).await;
    // On A the live subscriber is there too.
    for (node, subscribers) in [(&a, 2), (&late, 1)] {
        let (addr, last) = (node.addr, old[4].to_string());
        let response = tokio::spawn(async move { events(addr, "/?limit=2", Some(&last)).await });
        wait_for_subscribers(&node.topic, subscribers).await;
        a.topic.publish("new-1").await.unwrap();
        let got = response.await.unwrap();
        assert_eq!(
            (got[0].event.as_str(), got[0].data.as_str()),
            ("resync", "0")
        );
        assert_eq!(got[1].data, "new-1");
        assert_eq!(parse_id(&got[1].last_event_id).0, parse_id(new.as_str()).0);
    }
    a.topic.publish("end").await.unwrap();
    let received = live.await.unwrap();
    let text: Vec<String> = received
        .iter()
        .map(|e| String::from_utf8(e.to_vec()).unwrap())
        .collect();
    let mut want: Vec<String> = (0..10).map(|n| format!("old-{n}")).collect();
    want.extend([
        "0".into(),
        "new-0".into(),
        "new-1".into(),
        "new-1".into(),
        "end".into(),
    ]);
    let data: Vec<String> = received
        .iter()
        .filter_map(|e| data_of(e))
        .map(str::to_owned)
        .collect();
    assert_eq!(data, want, "{text:?}");
    assert!(text[10].starts_with("event: resync\n"), "{text:?}");
    drop((a, late));
}

/// An id that `MAXLEN` trimmed away is answered with the resync notice, on the node that had it
/// and on one that never did, and the client goes on live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_trimmed_by_maxlen_resyncs() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, 10).await;
    let first = a.topic.publish("first").await.unwrap();
    for n in 0..1000 {
        a.topic.publish(n.to_string()).await.unwrap();
    }
    let length: u64 = redis
        .command(redis::cmd("XLEN").arg("tower-sse:{feed}"))
        .await;
    assert!(length < 500, "the stream was not trimmed: {length}");
    let late = node(&redis, 10).await;
    for (node, subscribers) in [(&a, 1), (&late, 1)] {
        let (addr, last) = (node.addr, first.to_string());
        let response = tokio::spawn(async move { events(addr, "/?limit=2", Some(&last)).await });
        wait_for_subscribers(&node.topic, subscribers).await;
        // The notice comes once Redis said the id is gone; then live events.
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.topic.publish("live").await.unwrap();
        let got = response.await.unwrap();
        assert_eq!(
            (got[0].event.as_str(), got[0].data.as_str()),
            ("resync", "0")
        );
        assert_eq!(got[1].data, "live");
    }
    drop((a, late));
}

/// A subscriber that never reads does not hold up the node's reader or its other clients: they
/// get every event, in order; the stalled one, once it reads, is told it lagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_never_stalls_the_reader() {
    const EVENTS: usize = 3_000;
    const MAX_EVENTS: usize = 1_000;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, MAX_EVENTS).await;
    let b = node_with(
        &redis,
        Hub::builder()
            .max_events(MAX_EVENTS)
            .lag_policy(LagPolicy::Disconnect),
    )
    .await;
    let mut stalled = b.topic.subscribe();
    let stalled_socket = get(b.addr, "/", None).await;
    let fast = {
        let addr = b.addr;
        tokio::spawn(async move { events(addr, &format!("/?limit={EVENTS}"), None).await })
    };
    wait_for_subscribers(&b.topic, 3).await;
    let padding = "x".repeat(1024);
    for n in 0..EVENTS {
        let event = Event::new().data(n.to_string()).comment(&padding);
        a.topic.publish(event).await.unwrap();
        if n % 100 == 99 {
            // Paced a little, as a live feed is: the fast client keeps up, the stalled one not.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let fast = tokio::time::timeout(PATIENCE, fast)
        .await
        .expect("the fast client was held up")
        .unwrap();
    let data: Vec<String> = fast.iter().map(|e| e.data.clone()).collect();
    let want: Vec<String> = (0..EVENTS).map(|n| n.to_string()).collect();
    assert_eq!(data, want);
    // The one that never read: the log moved on without it.
    let first = stalled.next().await.unwrap().unwrap().to_bytes();
    assert!(first.starts_with(b"event: lagged\n"), "{first:?}");
    assert!(stalled.next().await.is_none());
    drop(stalled_socket);
    drop((a, b));
}

/// With no Redis to reach at all, a node still answers `200` (the stream waits) and publishing
/// fails with a typed error within a bounded time instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_publishing_fails_and_streams_wait() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let node = starting_node(client, Hub::builder()).await;
    let response = tokio::time::timeout(Duration::from_secs(5), get(node.addr, "/", None))
        .await
        .expect("no answer without Redis");
    assert_eq!(response.status(), StatusCode::OK);
    let error = tokio::time::timeout(PATIENCE, node.topic.publish("lost"))
        .await
        .expect("publishing hung without Redis")
        .unwrap_err();
    assert!(error.to_string().contains("not reachable"), "{error}");
    drop(response);
}
