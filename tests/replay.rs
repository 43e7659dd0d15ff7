//! `LastEventId` and the replay log: resuming strictly after an id, with no gap and no
//! duplicate, even while publishers keep publishing; typed outcomes for ids that cannot be
//! resumed; clients that reconnect over real sockets.

mod common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::{read_body, serve};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_sse::{
    Event, Hub, LastEventId, LastEventIdError, ReplayError, ReplayLog, SseBody, Topic,
};

fn id(text: &str) -> LastEventId {
    LastEventId::new(text).unwrap()
}

fn wire(log: &ReplayLog, last: &str) -> Result<Vec<Bytes>, ReplayError> {
    Ok(log.after(&id(last))?.map(Event::to_bytes).collect())
}

/// The id a log gave its `n`th event: `EPOCH-N`.
fn nth(log: &ReplayLog, n: u64) -> String {
    format!("{}-{n}", log.epoch())
}

/// The wire form of the `n`th event of a log whose data is `data`.
fn event(log: &ReplayLog, data: &str, n: u64) -> String {
    format!("data: {data}\nid: {}\n\n", nth(log, n))
}

#[test]
fn ids_count_up_and_replay_starts_strictly_after_the_last_id() {
    let mut log = ReplayLog::new(100, usize::MAX);
    assert_eq!(log.last_id(), None);
    assert_eq!(wire(&log, &nth(&log, 0)).unwrap(), Vec::<Bytes>::new());
    for (n, text) in ["a", "b", "c"].into_iter().enumerate() {
        // An id set by the publisher is replaced: the log numbers every event itself.
        let event = Event::new().id("mine").unwrap().data(text);
        assert_eq!(log.push(event).as_str(), nth(&log, n as u64 + 1));
    }
    assert_eq!((log.len(), log.last_id()), (3, Some(id(&nth(&log, 3)))));
    assert_eq!(
        wire(&log, &nth(&log, 0)).unwrap(),
        [
            event(&log, "a", 1),
            event(&log, "b", 2),
            event(&log, "c", 3)
        ]
    );
    assert_eq!(
        wire(&log, &nth(&log, 1)).unwrap(),
        [event(&log, "b", 2), event(&log, "c", 3)]
    );
    assert!(wire(&log, &nth(&log, 3)).unwrap().is_empty());
    assert_eq!(log.after(&id(&nth(&log, 2))).unwrap().len(), 1);
}

/// Every log draws its own epoch, so an id of one log (an earlier run of the server, a topic
/// removed and made again) is unknown to every other, never resumed from the wrong place.
#[test]
fn ids_of_another_log_are_unknown() {
    let mut earlier = ReplayLog::new(100, usize::MAX);
    let mut later = ReplayLog::new(100, usize::MAX);
    assert_ne!(earlier.epoch(), later.epoch());
    assert!(!earlier.epoch().is_empty() && !earlier.epoch().contains('-'));
    for n in 1..=5 {
        earlier.push(n.to_string());
        later.push(n.to_string());
    }
    let old = earlier.push("6");
    assert_eq!(
        wire(&later, old.as_str()),
        Err(ReplayError::Unknown { last: old.clone() })
    );
    assert_eq!(wire(&later, &nth(&earlier, 2)).unwrap_err().missed(), 0);
    assert_eq!(wire(&earlier, old.as_str()).unwrap(), Vec::<Bytes>::new());
}

#[test]
fn ids_the_log_never_issued_are_unknown() {
    let mut log = ReplayLog::new(100, usize::MAX);
    log.push("a");
    log.push("b");
    let epoch = log.epoch().to_owned();
    for last in [
        format!("{epoch}-3"),
        format!("{epoch}-99"),
        format!("{epoch}-+1"),
        format!("{epoch}-01"),
        format!("{epoch}--1"),
        format!("{epoch}- 1"),
        format!("{epoch}-1 "),
        format!("{epoch}-"),
        format!("{epoch}-18446744073709551616"),
        "-1".to_owned(),
        epoch.clone(),
        "1".to_owned(),
        "abc".to_owned(),
        "é".to_owned(),
    ] {
        assert_eq!(
            wire(&log, &last),
            Err(ReplayError::Unknown { last: id(&last) }),
            "{last:?}"
        );
    }
    let err = log.after(&id(&nth(&log, 7))).unwrap_err();
    assert_eq!(err.missed(), 0);
    assert!(err.to_string().contains(&format!("\"{epoch}-7\"")), "{err}");
}

#[test]
fn the_log_is_bounded_by_count_and_evicted_ids_say_what_was_missed() {
    let mut log = ReplayLog::new(3, usize::MAX);
    for n in 1..=5 {
        log.push(n.to_string());
    }
    assert_eq!(log.len(), 3);
    assert_eq!(
        wire(&log, &nth(&log, 2)).unwrap(),
        [
            event(&log, "3", 3),
            event(&log, "4", 4),
            event(&log, "5", 5)
        ]
    );
    let err = log.after(&id(&nth(&log, 1))).unwrap_err();
    assert_eq!(
        err,
        ReplayError::Evicted {
            last: id(&nth(&log, 1)),
            missed: Some(1)
        }
    );
    assert_eq!(err.missed(), 1);
    assert_eq!(log.after(&id(&nth(&log, 0))).unwrap_err().missed(), 2);
}

#[test]
fn the_log_is_bounded_by_bytes_but_keeps_the_newest_event() {
    let mut log = ReplayLog::new(100, usize::MAX);
    let size = event(&log, "1", 1).len();
    log = ReplayLog::new(100, 2 * size);
    for n in 1..=9 {
        log.push(n.to_string());
        assert!(log.bytes() <= 2 * size);
    }
    assert_eq!((log.len(), log.bytes()), (2, 2 * size));
    assert_eq!(
        wire(&log, &nth(&log, 7)).unwrap(),
        [event(&log, "8", 8), event(&log, "9", 9)]
    );
    let big = "x".repeat(10 * size);
    assert_eq!(log.push(big.as_str()).as_str(), nth(&log, 10));
    assert_eq!(log.len(), 1, "an event larger than the limit is kept alone");
    assert_eq!(log.bytes(), event(&log, &big, 10).len());
    assert_eq!(log.after(&id(&nth(&log, 9))).unwrap().count(), 1);
    log.push("small");
    assert_eq!(
        log.len(),
        1,
        "the large event goes as soon as a newer one comes"
    );
}

#[test]
fn last_event_id_reads_the_header() {
    let mut headers = HeaderMap::new();
    assert_eq!(LastEventId::from_headers(&headers), Ok(None));
    headers.insert("last-event-id", HeaderValue::from_static(""));
    assert_eq!(
        LastEventId::from_headers(&headers),
        Ok(None),
        "empty means none"
    );
    headers.insert("last-event-id", HeaderValue::from_static("42"));
    let last = LastEventId::from_headers(&headers).unwrap().unwrap();
    assert_eq!((last.as_str(), last.as_u64()), ("42", Some(42)));
    let utf8 = "évènement-7";
    headers.insert(
        "last-event-id",
        HeaderValue::from_bytes(utf8.as_bytes()).unwrap(),
    );
    let last = LastEventId::from_headers(&headers).unwrap().unwrap();
    assert_eq!((last.as_str(), last.as_u64()), (utf8, None));

    headers.insert(
        "last-event-id",
        HeaderValue::from_bytes(b"ab\xffc").unwrap(),
    );
    assert_eq!(
        LastEventId::from_headers(&headers),
        Err(LastEventIdError::InvalidUtf8 { position: 2 })
    );
    headers.insert("last-event-id", HeaderValue::from_static("1"));
    headers.append("last-event-id", HeaderValue::from_static("2"));
    assert_eq!(
        LastEventId::from_headers(&headers),
        Err(LastEventIdError::Repeated)
    );
}

#[test]
fn last_event_id_refuses_what_no_id_field_can_carry() {
    for (text, character, position) in [("a\rb", '\r', 1), ("ab\n", '\n', 2), ("\0", '\0', 0)] {
        let err = LastEventId::new(text).unwrap_err();
        assert_eq!(
            err,
            LastEventIdError::InvalidCharacter {
                character,
                position
            }
        );
        assert_eq!(text.parse::<LastEventId>(), Err(err.clone()));
        assert!(
            err.to_string().contains(&format!("byte {position}")),
            "{err}"
        );
    }
    let ok: LastEventId = "any text, even spaces ".parse().unwrap();
    assert_eq!(ok.to_string(), "any text, even spaces ");
    for canonical in ["0", "7", "18446744073709551615"] {
        assert_eq!(
            id(canonical).as_u64().map(|n| n.to_string()).as_deref(),
            Some(canonical)
        );
    }
}

/// The `n`th id of the topic whose first id is `first`.
fn topic_id(first: &LastEventId, n: u64) -> LastEventId {
    let (epoch, _) = first.as_str().split_once('-').unwrap();
    id(&format!("{epoch}-{n}"))
}

#[tokio::test]
async fn a_topic_resumes_after_an_id_then_goes_live() {
    let hub = Hub::builder().max_events(4).build();
    let topic = hub.topic("t");
    let first = topic.publish("1").await.unwrap();
    for n in 2..=6 {
        topic.publish(n.to_string()).await.unwrap();
    }
    let mut resumed = topic.subscribe_after(&topic_id(&first, 3)).unwrap();
    topic.publish("7").await.unwrap();
    drop(topic);
    hub.remove("t");
    // The topic is gone: the subscriber yields what it missed, then ends (a hang fails).
    let got: Vec<Bytes> = tokio::time::timeout(Duration::from_secs(10), async {
        let mut got = Vec::new();
        while let Some(event) = resumed.next().await {
            got.push(event.unwrap().to_bytes());
        }
        got
    })
    .await
    .expect("the subscriber did not end after its topic");
    let want: Vec<String> = (4..=7)
        .map(|n| format!("data: {n}\nid: {}\n\n", topic_id(&first, n)))
        .collect();
    assert_eq!(got, want);

    // A topic made again under the same name is another log: the old ids are unknown.
    let topic = hub.topic("t");
    topic.publish("again").await.unwrap();
    assert!(matches!(
        topic.subscribe_after(&topic_id(&first, 1)),
        Err(ReplayError::Unknown { .. })
    ));

    let hub = Hub::builder().max_events(2).build();
    let topic = hub.topic("u");
    let first = topic.publish("1").await.unwrap();
    for n in 2..=3 {
        topic.publish(n.to_string()).await.unwrap();
    }
    assert_eq!(
        topic.subscribe_after(&topic_id(&first, 0)).unwrap_err(),
        ReplayError::Evicted {
            last: topic_id(&first, 0),
            missed: Some(1)
        }
    );
    assert!(matches!(
        topic.subscribe_after(&topic_id(&first, 4)),
        Err(ReplayError::Unknown { .. })
    ));
    assert_eq!(
        topic.subscriber_count(),
        0,
        "a failed resume leaves no subscriber"
    );
}

/// A tiny deterministic generator, so the stress below varies without extra dependencies.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Four publishers publish 10,000 events while 64 clients each resume over and over from the
/// last id they received: each resume reads a few events and drops the subscriber. Every
/// client's concatenation must be exactly the ids after its starting point, in order, with
/// the same event for each id, whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_while_publishers_publish_has_no_gap_and_no_duplicate() {
    const PUBLISHERS: u64 = 4;
    const PER_PUBLISHER: u64 = 2_500;
    const TOTAL: u64 = PUBLISHERS * PER_PUBLISHER;
    const CLIENTS: u64 = 64;
    let hub = Hub::builder()
        .max_events(TOTAL as usize + 1)
        .max_bytes(usize::MAX)
        .build();
    let topic = hub.topic("stress");
    let first = topic.publish("0").await.unwrap();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let topic = topic.clone();
        let first = first.clone();
        clients.push(tokio::spawn(async move {
            let mut seed = client + 1;
            // Start anywhere in what was published so far, or from the very start.
            let published = topic.last_id().unwrap();
            let published: u64 = published
                .as_str()
                .split_once('-')
                .unwrap()
                .1
                .parse()
                .unwrap();
            let start = xorshift(&mut seed) % (published + 1);
            let mut last = start;
            let mut received = Vec::new();
            let mut resumes = 0;
            while last < TOTAL + 1 {
                let mut subscriber = topic.subscribe_after(&topic_id(&first, last)).unwrap();
                resumes += 1;
                let take = 1 + xorshift(&mut seed) % 300;
                for _ in 0..take {
                    let Some(Ok(event)) = subscriber.next().await else {
                        unreachable!("the topic outlives its clients");
                    };
                    let bytes = event.to_bytes();
                    let text = std::str::from_utf8(&bytes).unwrap();
                    let event_id: u64 = text
                        .split_once("\nid: ")
                        .and_then(|(_, rest)| rest.strip_suffix("\n\n"))
                        .and_then(|id| id.split_once('-'))
                        .unwrap()
                        .1
                        .parse()
                        .unwrap();
                    assert_eq!(event_id, last + 1, "client {client}: gap or duplicate");
                    last = event_id;
                    received.push(bytes);
                    if last == TOTAL + 1 {
                        break;
                    }
                }
            }
            (start, received, resumes)
        }));
    }
    let mut publishers = Vec::new();
    for publisher in 0..PUBLISHERS {
        let topic = topic.clone();
        publishers.push(tokio::spawn(async move {
            for n in 0..PER_PUBLISHER {
                topic
                    .publish(format!("publisher {publisher} event {n}"))
                    .await
                    .unwrap();
                if n % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let reference: Vec<Bytes> = topic
        .subscribe_after(&topic_id(&first, 0))
        .unwrap()
        .take(TOTAL as usize + 1)
        .map(|event| event.unwrap().to_bytes())
        .collect()
        .await;
    let mut resumes = 0;
    for client in clients {
        let (start, received, client_resumes) = client.await.unwrap();
        assert_eq!(
            received,
            reference[start as usize..],
            "client resumed after {start}"
        );
        resumes += client_resumes;
    }
    assert!(
        resumes > CLIENTS * 10,
        "too few resumes to stress: {resumes}"
    );
}

/// Sends `GET path` on a fresh HTTP/1.1 connection with the given `Last-Event-ID` values.
async fn get(addr: SocketAddr, path: &str, last_event_ids: &[&[u8]]) -> Response<Incoming> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", "127.0.0.1");
    for value in last_event_ids {
        request = request.header("last-event-id", HeaderValue::from_bytes(value).unwrap());
    }
    send.send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap()
}

type ResumeBody = Either<SseBody<futures::stream::Take<tower_sse::Subscriber>>, Empty<Bytes>>;

/// The handler a resumable feed needs: `400` for a malformed `Last-Event-ID`, `204` (a browser
/// then stops reconnecting) when it cannot be resumed, else the events after it, live ones
/// included, ending after `?limit=N` of them so that the client reconnects.
fn resume(topic: &Topic, request: &Request<Incoming>) -> Response<ResumeBody> {
    let status = |status| {
        let mut response = Response::new(Either::Right(Empty::new()));
        *response.status_mut() = status;
        response
    };
    let limit = request
        .uri()
        .query()
        .and_then(|query| query.strip_prefix("limit="))
        .map_or(usize::MAX, |limit| limit.parse().unwrap());
    let subscriber = match LastEventId::from_headers(request.headers()) {
        Err(_) => return status(StatusCode::BAD_REQUEST),
        Ok(None) => topic.subscribe(),
        Ok(Some(last)) => match topic.subscribe_after(&last) {
            Ok(subscriber) => subscriber,
            Err(_evicted_or_unknown) => return status(StatusCode::NO_CONTENT),
        },
    };
    tower_sse::response(Either::Left(SseBody::new(subscriber.take(limit))))
}

async fn serve_topic(topic: Topic) -> SocketAddr {
    serve(move |request| {
        let response = resume(&topic, &request);
        async move { response }
    })
    .await
}

/// A client that is cut off every few events and reconnects with `Last-Event-ID`, as an
/// `EventSource` does, ends up with exactly the published sequence, while events keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_receives_the_exact_sequence() {
    const EVENTS: u64 = 300;
    let hub = Hub::builder().max_events(EVENTS as usize).build();
    let topic = hub.topic("feed");
    let addr = serve_topic(topic.clone()).await;
    let first = get(addr, "/?limit=7", &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(topic.subscriber_count(), 1);
    let publisher = tokio::spawn(async move {
        for n in 1..=EVENTS {
            let tick = Event::new()
                .event("tick")
                .unwrap()
                .data(format!("tick {n}"));
            topic.publish(tick).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut received = Vec::new();
    let mut connections = 1;
    let mut response = first;
    loop {
        let body = read_body(response.into_body()).await;
        assert!(body.error.is_none(), "{:?}", body.error);
        received.extend(body.events());
        let last = received.last().map(|e| e.last_event_id.clone());
        if received.len() as u64 >= EVENTS {
            break;
        }
        let limit = 1 + connections % 13;
        let last = last.unwrap_or_default();
        response = get(addr, &format!("/?limit={limit}"), &[last.as_bytes()]).await;
        assert_eq!(response.status(), StatusCode::OK);
        connections += 1;
    }
    publisher.await.unwrap();
    let ids: Vec<String> = received.iter().map(|e| e.last_event_id.clone()).collect();
    let first = id(&ids[0]);
    let want: Vec<String> = (1..=EVENTS)
        .map(|n| topic_id(&first, n).to_string())
        .collect();
    assert_eq!(ids, want);
    for (n, event) in (1..).zip(&received) {
        assert_eq!(
            (event.event.as_str(), event.data.clone()),
            ("tick", format!("tick {n}"))
        );
    }
    assert!(connections > 30, "only {connections} connections");
}

/// Ids that cannot be resumed get `204 No Content`; malformed headers get `400 Bad Request`.
#[tokio::test]
async fn unresumable_ids_and_malformed_headers_get_typed_answers() {
    let hub = Hub::builder().max_events(5).build();
    let topic = hub.topic("feed");
    let first = topic.publish("1").await.unwrap();
    for n in 2..=20 {
        topic.publish(n.to_string()).await.unwrap();
    }
    let addr = serve_topic(topic.clone()).await;
    let evicted = topic_id(&first, 3).to_string();
    let future = topic_id(&first, 99).to_string();
    let earlier_run = format!("0{}", topic_id(&first, 16));
    for (ids, status) in [
        (&[evicted.as_bytes()][..], StatusCode::NO_CONTENT),
        (&[future.as_bytes()], StatusCode::NO_CONTENT), // never issued
        (&[earlier_run.as_bytes()], StatusCode::NO_CONTENT), // another epoch
        (&[b"16"], StatusCode::NO_CONTENT),             // no epoch
        (&[b"abc"], StatusCode::NO_CONTENT),            // never issued
        (&[b"\xff"], StatusCode::BAD_REQUEST),          // not UTF-8
        (&[b"1", b"2"], StatusCode::BAD_REQUEST),       // ambiguous
    ] {
        assert_eq!(get(addr, "/", ids).await.status(), status, "{ids:?}");
    }
    let last = topic_id(&first, 15).to_string();
    let response = get(addr, "/?limit=5", &[last.as_bytes()]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let ids: Vec<String> = read_body(response.into_body())
        .await
        .events()
        .into_iter()
        .map(|e| e.last_event_id)
        .collect();
    let want: Vec<String> = (16..=20).map(|n| topic_id(&first, n).to_string()).collect();
    assert_eq!(ids, want);
}

/// The axum extractors: `Option<LastEventId>` is `None` without the header, `LastEventId`
/// requires it, and a malformed one is `400 Bad Request` with the reason.
#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_extractors() {
    use axum::{routing::get as route, Router};
    use http_body_util::BodyExt;

    let app = Router::new()
        .route(
            "/optional",
            route(|last: Option<LastEventId>| async move {
                last.map_or_else(|| "none".to_owned(), |last| format!("after {last}"))
            }),
        )
        .route(
            "/required",
            route(|last: LastEventId| async move { format!("after {last}") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    for (path, ids, status, text) in [
        ("/optional", &[][..], StatusCode::OK, "none"),
        ("/optional", &[&b"41"[..]][..], StatusCode::OK, "after 41"),
        (
            "/optional",
            &[b"\xff"],
            StatusCode::BAD_REQUEST,
            "Last-Event-ID is not valid UTF-8 (byte 0)",
        ),
        (
            "/optional",
            &[b"1", b"2"],
            StatusCode::BAD_REQUEST,
            "Last-Event-ID was sent more than once",
        ),
        ("/required", &[b"x y"], StatusCode::OK, "after x y"),
        (
            "/required",
            &[],
            StatusCode::BAD_REQUEST,
            "Last-Event-ID header is required",
        ),
    ] {
        let response = get(addr, path, ids).await;
        assert_eq!(response.status(), status, "{path} {ids:?}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, text.as_bytes(), "{path} {ids:?}");
    }
}
