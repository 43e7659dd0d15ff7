//! `SseEmitter` + `channel` over real loopback sockets: ordering, backpressure, disconnects,
//! completion and time limits, as a real hyper client sees them.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{get, read_at_least, read_body, serve, Proto};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};
use tower_sse::{channel, ChannelBuilder, CloseReason, Event, SendErrorKind, TrySendError};

/// Hands each request's emitter to the test through a channel, and answers with its body.
async fn serve_emitters(
    builder: ChannelBuilder,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<tower_sse::SseEmitter>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = serve(move |_request| {
        let (emitter, body) = builder.clone().build();
        tx.send(emitter).unwrap();
        async move { tower_sse::response(body) }
    })
    .await;
    (addr, rx)
}

#[tokio::test]
async fn four_clones_deliver_every_event_whole_and_in_order() {
    for proto in [Proto::Http1, Proto::Http2] {
        let (addr, mut emitters) = serve_emitters(ChannelBuilder::new(64)).await;
        let (_client, response) = get(addr, proto, "/").await;
        let emitter = emitters.recv().await.unwrap();
        for clone in 0..4 {
            let emitter = emitter.clone();
            tokio::spawn(async move {
                for i in 0..25_000 {
                    emitter
                        .send(format!("clone {clone} event {i} {}", "x".repeat(i % 7)))
                        .await
                        .unwrap();
                }
            });
        }
        drop(emitter); // the stream ends cleanly when the last clone is dropped
        let received = read_body(response.into_body()).await;
        assert!(received.error.is_none(), "{proto:?}: {:?}", received.error);
        let mut next = [0usize; 4];
        let events = received.events();
        assert_eq!(events.len(), 100_000, "{proto:?}");
        for event in events {
            let mut words = event.data.split(' ');
            assert_eq!(words.next(), Some("clone"));
            let clone: usize = words.next().unwrap().parse().unwrap();
            assert_eq!(words.next(), Some("event"));
            let i: usize = words.next().unwrap().parse().unwrap();
            assert_eq!(i, next[clone], "{proto:?}: clone {clone} out of order");
            assert_eq!(words.next(), Some("x".repeat(i % 7).as_str()));
            next[clone] += 1;
        }
        assert_eq!(next, [25_000; 4]);
    }
}

/// The most bytes the kernel may hold for one loopback connection: the sender's and the
/// receiver's socket buffers at their largest.
fn socket_buffer_limit() -> usize {
    ["/proc/sys/net/ipv4/tcp_wmem", "/proc/sys/net/ipv4/tcp_rmem"]
        .iter()
        .map(|path| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|line| line.split_whitespace().last()?.parse::<usize>().ok())
                .unwrap_or(32 << 20)
        })
        .sum()
}

#[tokio::test]
async fn a_client_that_stops_reading_stops_the_producer() {
    const CAPACITY: usize = 16;
    const EVENT_BYTES: usize = 16 * 1024;
    let (addr, mut emitters) = serve_emitters(ChannelBuilder::new(CAPACITY)).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    let emitter = emitters.recv().await.unwrap();
    let payload = "y".repeat(EVENT_BYTES);
    let accepted = Arc::new(AtomicUsize::new(0));
    let producer = {
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let n = accepted.load(Ordering::SeqCst);
                let event = Event::new().data(format!("{n} {payload}"));
                match emitter
                    .send_timeout(event, Duration::from_millis(500))
                    .await
                {
                    Ok(()) => accepted.fetch_add(1, Ordering::SeqCst),
                    Err(err) => {
                        assert_eq!(err.kind(), SendErrorKind::Timeout);
                        assert!(err
                            .event()
                            .to_bytes()
                            .starts_with(format!("data: {n} ").as_bytes()));
                        return emitter;
                    }
                };
            }
        })
    };
    // The client reads nothing: the producer must stall, with memory bounded by the channel,
    // hyper's write buffer and the kernel's socket buffers.
    let emitter = tokio::time::timeout(Duration::from_secs(30), producer)
        .await
        .expect("send never waited: no backpressure")
        .unwrap();
    let stalled_at = accepted.load(Ordering::SeqCst);
    let hyper_buffer = 512 * 1024;
    let bound = CAPACITY + (socket_buffer_limit() + hyper_buffer) / EVENT_BYTES + 2;
    assert!(
        stalled_at < bound,
        "{stalled_at} events accepted while the client read nothing (bound {bound})"
    );
    // Once the client reads, everything accepted arrives, then the end.
    emitter.complete();
    drop(emitter);
    let events = read_body(response.into_body()).await.events();
    assert_eq!(events.len(), stalled_at);
    for (i, event) in events.iter().enumerate() {
        assert!(event.data.starts_with(&format!("{i} ")));
        assert_eq!(event.data.len(), format!("{i} ").len() + EVENT_BYTES);
    }
}

/// Runs `disconnect` on an open stream whose producer is idle, and returns how long the
/// producer took to learn the client was gone.
async fn time_to_notice(
    proto: Proto,
    disconnect: impl FnOnce(
        common::Client,
        hyper::Response<hyper::body::Incoming>,
    ) -> Option<common::Client>,
) -> Duration {
    let (addr, mut emitters) = serve_emitters(ChannelBuilder::new(8)).await;
    let (client, response) = get(addr, proto, "/").await;
    let emitter = emitters.recv().await.unwrap();
    emitter.send("first").await.unwrap();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    read_at_least(&mut body, &mut bytes, b"data: first\n\n".len()).await;
    let (noticed_tx, noticed) = oneshot::channel();
    tokio::spawn(async move {
        let reason = emitter.closed().await;
        let at = Instant::now();
        assert!(emitter.is_closed());
        let err = emitter.send("too late").await.unwrap_err();
        noticed_tx
            .send((at, reason, err.kind(), err.into_event()))
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let dropped_at = Instant::now();
    let _kept_open = disconnect(client, hyper::Response::new(body));
    let (at, reason, kind, event) = tokio::time::timeout(Duration::from_secs(5), noticed)
        .await
        .expect("the producer never learned the client was gone")
        .unwrap();
    assert_eq!(reason, CloseReason::Disconnected);
    assert_eq!(kind, SendErrorKind::Closed(CloseReason::Disconnected));
    assert_eq!(event, Event::from("too late"));
    at.saturating_duration_since(dropped_at)
}

#[tokio::test]
async fn an_idle_producer_learns_at_once_that_the_client_left() {
    for proto in [Proto::Http1, Proto::Http2] {
        let took = time_to_notice(proto, |client, response| {
            client.connection.abort();
            drop(response);
            None
        })
        .await;
        assert!(
            took < Duration::from_millis(50),
            "{proto:?}: noticed after {took:?}"
        );
    }
    // HTTP/2: the client cancels just this stream (RST_STREAM), the connection stays up.
    let took = time_to_notice(Proto::Http2, |client, response| {
        drop(response);
        Some(client)
    })
    .await;
    assert!(
        took < Duration::from_millis(50),
        "HTTP/2 reset: noticed after {took:?}"
    );
}

/// Opens a stream and queues the events "0" to "49" on it.
async fn fifty_events_queued(
    proto: Proto,
) -> (
    common::Client,
    hyper::Response<hyper::body::Incoming>,
    tower_sse::SseEmitter,
) {
    let (addr, mut emitters) = serve_emitters(ChannelBuilder::new(64)).await;
    let (client, response) = get(addr, proto, "/").await;
    let emitter = emitters.recv().await.unwrap();
    for i in 0..50 {
        emitter.send(format!("{i}")).await.unwrap();
    }
    (client, response, emitter)
}

fn fifty_data() -> Vec<String> {
    (0..50).map(|i| i.to_string()).collect()
}

#[tokio::test]
async fn complete_ends_cleanly_after_everything_queued() {
    for proto in [Proto::Http1, Proto::Http2] {
        let (_client, response, emitter) = fifty_events_queued(proto).await;
        emitter.complete();
        let err = emitter.send("after").await.unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::Closed(CloseReason::Completed));
        assert_eq!(err.into_event(), Event::from("after"));
        match emitter.try_send("after") {
            Err(TrySendError::Closed(event, CloseReason::Completed)) => {
                assert_eq!(event, Event::from("after"))
            }
            other => panic!("{other:?}"),
        }
        let received = read_body(response.into_body()).await;
        assert!(received.error.is_none(), "{proto:?}: {:?}", received.error);
        let data: Vec<String> = received.events().into_iter().map(|e| e.data).collect();
        assert_eq!(data, fifty_data());
        assert_eq!(emitter.closed().await, CloseReason::Completed);
    }
}

#[tokio::test]
async fn complete_with_error_aborts_after_everything_queued() {
    for proto in [Proto::Http1, Proto::Http2] {
        let (_client, response, emitter) = fifty_events_queued(proto).await;
        emitter.complete_with_error("the model failed");
        let err = emitter.send("after").await.unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::Closed(CloseReason::Error));
        let received = read_body(response.into_body()).await;
        assert!(
            received.error.is_some(),
            "{proto:?}: the client saw a clean end"
        );
        let data: Vec<String> = received.events().into_iter().map(|e| e.data).collect();
        assert_eq!(data, fifty_data(), "{proto:?}");
        assert_eq!(emitter.closed().await, CloseReason::Error);
    }
}

#[tokio::test]
async fn an_error_event_ends_cleanly_when_asked_for() {
    let (addr, mut emitters) = serve_emitters(ChannelBuilder::new(8).error_event(true)).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    let emitter = emitters.recv().await.unwrap();
    emitter.send("partial").await.unwrap();
    emitter.complete_with_error("upstream\nfailed");
    let received = read_body(response.into_body()).await;
    assert!(received.error.is_none(), "{:?}", received.error);
    // Not `error`, which browsers deliver to the same listeners as a lost connection.
    assert_eq!(
        received.text(),
        "data: partial\n\nevent: stream-error\ndata: upstream\ndata: failed\n\n"
    );
}

#[tokio::test]
async fn the_error_event_has_the_name_it_is_given() {
    assert!(ChannelBuilder::new(8)
        .error_event_name("bad\nname")
        .is_err());
    let builder = ChannelBuilder::new(8)
        .error_event(true)
        .error_event_name("failure")
        .unwrap();
    let (addr, mut emitters) = serve_emitters(builder).await;
    let (_client, response) = get(addr, Proto::Http2, "/").await;
    let emitter = emitters.recv().await.unwrap();
    emitter.complete_with_error("gone");
    let received = read_body(response.into_body()).await;
    assert!(received.error.is_none(), "{:?}", received.error);
    assert_eq!(received.text(), "event: failure\ndata: gone\n\n");
}

#[tokio::test]
async fn events_sent_before_the_first_poll_are_kept() {
    let addr = serve(|_request| async {
        let (emitter, body) = channel(4);
        for i in 0..4 {
            emitter.try_send(format!("early {i}")).unwrap();
        }
        assert!(matches!(
            emitter.try_send("fifth"),
            Err(TrySendError::Full(_))
        ));
        emitter.complete();
        tower_sse::response(body)
    })
    .await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let received = read_body(response.into_body()).await;
    assert_eq!(
        received.text(),
        "data: early 0\n\ndata: early 1\n\ndata: early 2\n\ndata: early 3\n\n"
    );
}

#[tokio::test]
async fn the_timeout_ends_the_stream_cleanly_with_its_event() {
    let builder = ChannelBuilder::new(8)
        .timeout(Duration::from_millis(300))
        .timeout_event(Event::new().event("timeout").unwrap().data("bye"));
    let (addr, mut emitters) = serve_emitters(builder).await;
    let started = Instant::now();
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    let emitter = emitters.recv().await.unwrap();
    emitter.send("before").await.unwrap();
    let received = read_body(response.into_body()).await;
    let took = started.elapsed();
    assert!(received.error.is_none(), "{:?}", received.error);
    assert_eq!(
        received.text(),
        "data: before\n\nevent: timeout\ndata: bye\n\n"
    );
    assert!(took >= Duration::from_millis(300), "ended after {took:?}");
    let err = emitter.send("late").await.unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Closed(CloseReason::TimedOut));
    assert_eq!(emitter.closed().await, CloseReason::TimedOut);
}

#[tokio::test]
async fn send_timeout_gives_the_event_back_when_there_is_no_room() {
    let (emitter, body) = channel(1);
    emitter.send("fills the buffer").await.unwrap();
    let started = Instant::now();
    let err = emitter
        .send_timeout("waits", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(err.kind(), SendErrorKind::Timeout);
    assert_eq!(err.into_event(), Event::from("waits"));
    // Room appears as soon as the body takes the first event.
    let mut body = body;
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&frame[..], b"data: fills the buffer\n\n");
    emitter
        .send_timeout("fits now", Duration::from_millis(100))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_waiting_send_fails_when_the_client_leaves() {
    let (emitter, body) = channel(1);
    emitter.send("fills the buffer").await.unwrap();
    let waiting = tokio::spawn({
        let emitter = emitter.clone();
        async move { emitter.send("waits").await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(body);
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Closed(CloseReason::Disconnected));
    assert_eq!(err.into_event(), Event::from("waits"));
}

#[tokio::test]
async fn many_channels_each_keep_their_own_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (addr, mut emitters) = serve_emitters(ChannelBuilder::new(2)).await;
    let mut readers = Vec::new();
    for stream in 0..20 {
        let (client, response) = get(addr, Proto::Http2, "/").await;
        let emitter = emitters.recv().await.unwrap();
        tokio::spawn(async move {
            for i in 0..200 {
                emitter.send(format!("{stream}:{i}")).await.unwrap();
            }
        });
        let log = Arc::clone(&log);
        readers.push(tokio::spawn(async move {
            let events = read_body(response.into_body()).await.events();
            let expected: Vec<String> = (0..200).map(|i| format!("{stream}:{i}")).collect();
            assert_eq!(
                events.into_iter().map(|e| e.data).collect::<Vec<_>>(),
                expected
            );
            log.lock().unwrap().push(stream);
            drop(client);
        }));
    }
    for reader in readers {
        reader.await.unwrap();
    }
    assert_eq!(log.lock().unwrap().len(), 20);
}
