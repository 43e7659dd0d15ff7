//! `tower_sse::client` against a fault-injecting server on loopback (raw HTTP/1.1 bytes, so
//! streams can be cut anywhere): checked responses, reconnection, limits, cancellation.
#![cfg(feature = "client")]

mod client_support;

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use client_support::{chunk, chunked_sse_head, head, sse_head, write, Fake, Step};
use futures::{stream, Stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use tokio::time::timeout;
use tower_sse::client::{ClientError, ClientEvent, EventSource, Reconnect, ERROR_BODY_PREFIX};

const MS: Duration = Duration::from_millis(1);

/// Everything a stream yields until it ends (within a time limit), and the error it ended with.
async fn drain(stream: impl Stream<Item = Result<ClientEvent, ClientError>>) -> Drained {
    timeout(Duration::from_secs(30), async {
        let mut stream = std::pin::pin!(stream);
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(item) => items.push(item),
                Err(error) => {
                    assert!(stream.next().await.is_none(), "nothing after an error");
                    return Drained {
                        items,
                        error: Some(error),
                    };
                }
            }
        }
        Drained { items, error: None }
    })
    .await
    .expect("the stream did not end within 30 s")
}

struct Drained {
    items: Vec<ClientEvent>,
    error: Option<ClientError>,
}

impl Drained {
    fn data(&self) -> Vec<&str> {
        self.items
            .iter()
            .filter_map(|item| match item {
                ClientEvent::Message(event) => Some(&*event.data),
                _ => None,
            })
            .collect()
    }

    fn reconnections(&self) -> Vec<(Duration, Option<&ClientError>)> {
        self.items
            .iter()
            .filter_map(|item| match item {
                ClientEvent::Reconnecting { delay, error, .. } => Some((*delay, error.as_ref())),
                _ => None,
            })
            .collect()
    }
}

fn get(fake: &Fake) -> EventSource {
    EventSource::get(fake.url("/events").parse().unwrap())
}

fn post(fake: &Fake, body: &'static str) -> EventSource {
    let request = Request::post(fake.url("/gpt-stream"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    EventSource::new(request)
}

/// Waits long enough for a reconnection that should not happen to show up.
async fn settle() {
    tokio::time::sleep(300 * MS).await;
}

// --- streams cut mid-event -------------------------------------------------------------------

#[tokio::test]
async fn an_event_cut_by_the_end_of_the_body_is_not_delivered() {
    let fake = Fake::start(vec![vec![sse_head(), write("data: a\n\ndata: cut sho")]]).await;
    let drained = drain(get(&fake).reconnect(Reconnect::Never).stream()).await;
    assert_eq!(drained.data(), ["a"]);
    assert!(drained.error.is_none(), "a clean end");
    assert!(matches!(
        drained.items[0],
        ClientEvent::Open {
            status: StatusCode::OK,
            ..
        }
    ));
}

#[tokio::test]
async fn an_event_cut_by_a_broken_connection_is_not_delivered_and_the_stream_resumes() {
    let fake = Fake::start(vec![
        // The connection closes in the middle of a chunk: the body fails.
        vec![
            chunked_sse_head(),
            chunk(b"id: 1\ndata: a\n\nid: 2\ndata: cu"),
        ],
        vec![sse_head(), write("id: 2\ndata: b\n\n"), Step::Hold],
    ])
    .await;
    let events = get(&fake).backoff(10 * MS, 10 * MS).stream();
    let drained = drain(events.take(5)).await;
    assert_eq!(drained.data(), ["a", "b"]);
    let reconnections = drained.reconnections();
    assert_eq!(reconnections.len(), 1);
    assert!(
        matches!(reconnections[0].1, Some(ClientError::Transport(_))),
        "{:?}",
        reconnections[0]
    );
    // Resumed after the last complete event, not the cut one.
    let requests = fake.requests();
    assert_eq!(requests[0].header("last-event-id"), None);
    assert_eq!(requests[1].header("last-event-id").as_deref(), Some("1"));
}

// --- reconnection ----------------------------------------------------------------------------

#[tokio::test]
async fn retry_sets_the_reconnection_delay() {
    let fake = Fake::start(vec![
        vec![sse_head(), write("retry: 400\ndata: a\n\n")],
        vec![sse_head(), write("data: b\n\n"), Step::Hold],
    ])
    .await;
    // The server's retry wins over a much shorter backoff.
    let events = get(&fake).backoff(MS, MS).stream();
    let drained = drain(events.take(5)).await;
    assert_eq!(drained.data(), ["a", "b"]);
    let (delay, error) = drained.reconnections()[0];
    assert!(error.is_none(), "the server ended the response cleanly");
    assert!((400 * MS..=500 * MS).contains(&delay), "{delay:?}");
    let requests = fake.requests();
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= 400 * MS, "reconnected after {waited:?}");
}

#[tokio::test]
async fn backoff_doubles_up_to_its_cap_then_retries_run_out() {
    let fake = Fake::start(vec![vec![
        head("503 Service Unavailable", "text/plain"),
        write("busy"),
    ]])
    .await;
    let events = get(&fake)
        .backoff(50 * MS, 200 * MS)
        .max_retries(4)
        .stream();
    let drained = drain(events).await;
    let delays: Vec<Duration> = drained.reconnections().iter().map(|r| r.0).collect();
    for (delay, floor) in delays.iter().zip([50, 100, 200, 200]) {
        assert!(
            (floor * MS..=floor * MS * 5 / 4).contains(delay),
            "{delays:?}"
        );
    }
    assert_eq!(delays.len(), 4);
    match drained.error {
        Some(ClientError::Status { status, body, .. }) => {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body, "busy");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.requests().len(), 5);
}

#[tokio::test]
async fn last_event_id_is_sent_from_the_first_request_when_given_then_the_latest() {
    let fake = Fake::start(vec![
        vec![sse_head(), write("id: 42\ndata: a\n\n")],
        vec![sse_head(), write("data: b\n\n"), Step::Hold],
    ])
    .await;
    let events = get(&fake)
        .last_event_id("41")
        .backoff(MS, MS)
        .stream()
        .messages();
    let messages: Vec<_> = timeout(Duration::from_secs(10), events.take(2).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(messages[0].as_ref().unwrap().last_event_id, "42");
    let requests = fake.requests();
    assert_eq!(requests[0].header("last-event-id").as_deref(), Some("41"));
    assert_eq!(requests[1].header("last-event-id").as_deref(), Some("42"));
    assert_eq!(
        requests[0].header("accept").as_deref(),
        Some("text/event-stream")
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported() {
    // A port nobody listens on.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let events = EventSource::get(format!("http://{addr}/").parse().unwrap())
        .backoff(10 * MS, 10 * MS)
        .max_retries(2)
        .stream();
    let drained = drain(events).await;
    assert_eq!(drained.reconnections().len(), 2);
    assert!(matches!(drained.error, Some(ClientError::Transport(_))));
}

// --- onopen ----------------------------------------------------------------------------------

#[tokio::test]
async fn no_content_stops_the_stream() {
    let fake = Fake::start(vec![vec![head("204 No Content", "text/plain")]]).await;
    let drained = drain(get(&fake).backoff(MS, MS).stream()).await;
    assert!(drained.items.is_empty(), "no open, no event");
    assert!(drained.error.is_none());
    settle().await;
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn an_html_error_page_is_a_typed_error_with_the_start_of_the_page() {
    let page = format!(
        "<!DOCTYPE html><html><body><h1>Internal Server Error</h1>{}</body></html>",
        "<p>details</p>".repeat(500)
    );
    let fake = Fake::start(vec![vec![
        head("500 Internal Server Error", "text/html; charset=utf-8"),
        write(&page),
    ]])
    .await;
    let drained = drain(get(&fake).max_retries(0).stream()).await;
    match drained.error {
        Some(error @ ClientError::Status { .. }) => {
            assert!(error.is_retryable(), "5xx is retried while retries last");
            assert!(error.to_string().contains("500"), "{error}");
            let ClientError::Status {
                status,
                content_type,
                body,
            } = error
            else {
                unreachable!()
            };
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(content_type.unwrap(), "text/html; charset=utf-8");
            assert_eq!(body.len(), ERROR_BODY_PREFIX);
            assert_eq!(body, page.as_bytes()[..ERROR_BODY_PREFIX]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_4xx_is_never_retried() {
    for status in ["400 Bad Request", "404 Not Found", "429 Too Many Requests"] {
        let fake = Fake::start(vec![vec![
            head(status, "application/json"),
            write(r#"{"error": "no"}"#),
        ]])
        .await;
        // Retries are unlimited by default.
        let drained = drain(get(&fake).backoff(MS, MS).stream()).await;
        assert!(drained.reconnections().is_empty());
        let error = drained.error.expect("an error");
        assert!(!error.is_retryable());
        assert_eq!(error.status().unwrap().as_str(), &status[..3]);
        settle().await;
        assert_eq!(fake.requests().len(), 1, "{status}");
    }
}

#[tokio::test]
async fn a_wrong_content_type_is_a_typed_error() {
    for content_type in ["application/json", "text/plain", "text/event-streams"] {
        let fake = Fake::start(vec![vec![
            head("200 OK", content_type),
            write("data: looks like an event\n\n"),
        ]])
        .await;
        let drained = drain(get(&fake).backoff(MS, MS).stream()).await;
        match drained.error {
            Some(ClientError::ContentType {
                status,
                content_type: got,
                body,
            }) => {
                assert_eq!(status, StatusCode::OK);
                assert_eq!(got.unwrap(), content_type);
                assert_eq!(body, "data: looks like an event\n\n");
            }
            other => panic!("{content_type}: {other:?}"),
        }
        assert!(drained.items.is_empty(), "nothing was read as events");
        settle().await;
        assert_eq!(fake.requests().len(), 1);
    }
    // Parameters and case do not matter.
    let fake = Fake::start(vec![vec![
        head("200 OK", "Text/Event-Stream; charset=utf-8"),
        write("data: a\n\n"),
    ]])
    .await;
    let drained = drain(get(&fake).reconnect(Reconnect::Never).stream()).await;
    assert_eq!(drained.data(), ["a"]);
}

// --- requests that must not be sent twice ----------------------------------------------------

#[tokio::test]
async fn a_post_is_not_sent_again_after_a_clean_end_a_failure_or_a_5xx() {
    let scripts = [
        vec![sse_head(), write("data: a\n\n")],
        vec![chunked_sse_head(), chunk(b"data: a\n\ndata: b")],
        vec![head("502 Bad Gateway", "text/plain")],
    ];
    for (n, script) in scripts.into_iter().enumerate() {
        let fake = Fake::start(vec![script]).await;
        let drained = drain(post(&fake, r#"{"query": "hi"}"#).backoff(MS, MS).stream()).await;
        assert!(drained.reconnections().is_empty());
        match n {
            0 => assert!(drained.error.is_none()),
            1 => assert!(matches!(drained.error, Some(ClientError::Transport(_)))),
            _ => assert_eq!(
                drained.error.unwrap().status(),
                Some(StatusCode::BAD_GATEWAY)
            ),
        }
        settle().await;
        let requests = fake.requests();
        assert_eq!(requests.len(), 1, "script {n}");
        assert_eq!(requests[0].body, br#"{"query": "hi"}"#);
    }
}

#[tokio::test]
async fn a_post_is_sent_again_when_allowed_with_its_body_and_last_event_id() {
    let fake = Fake::start(vec![
        vec![sse_head(), write("id: 9\ndata: a\n\n")],
        vec![sse_head(), write("data: b\n\n"), Step::Hold],
    ])
    .await;
    let events = post(&fake, r#"{"query": "hi"}"#)
        .reconnect(Reconnect::Always)
        .backoff(MS, MS)
        .stream();
    let drained = drain(events.take(5)).await;
    assert_eq!(drained.data(), ["a", "b"]);
    let requests = fake.requests();
    assert!(requests[1].head.starts_with("post /gpt-stream"));
    assert_eq!(requests[1].body, br#"{"query": "hi"}"#);
    assert_eq!(requests[1].header("last-event-id").as_deref(), Some("9"));
}

// --- chunk boundaries ------------------------------------------------------------------------

/// A stream with every awkward byte: a BOM, CRLF, lone CR and LF line ends, comments, a field
/// without a colon, multi-byte UTF-8.
const AWKWARD: &[u8] = b"\xEF\xBB\xBFretry: 1000\r\nid: 1\r\nevent: tick\r\ndata: first\r\n\
data:  second line\r\n\r\n: a comment\r\ndata: cr\rdata: only\r\r\nid: 2\n\
data: \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80\n\ndata\n\ndata: unterminated";

/// The messages of `chunks` served as exactly these body frames by an in-process service: only
/// in process are frame boundaries exact (a socket may merge or split writes).
async fn messages_of(chunks: Vec<&'static [u8]>) -> Vec<(String, String, String)> {
    let service = tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let frames = chunks
            .clone()
            .into_iter()
            .map(|chunk| Ok::<_, Infallible>(Frame::data(Bytes::from_static(chunk))));
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(StreamBody::new(stream::iter(frames)))
                    .unwrap(),
            )
        }
    });
    let request = Request::get("/").body(Bytes::new()).unwrap();
    let mut messages = EventSource::with_service(service, request)
        .reconnect(Reconnect::Never)
        .stream()
        .messages();
    let mut out = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        out.push((message.event, message.data, message.last_event_id));
    }
    out
}

#[tokio::test]
async fn chunk_boundaries_at_every_byte_give_the_same_events() {
    let whole = messages_of(vec![AWKWARD]).await;
    let expected = [
        ("tick", "first\n second line", "1"),
        ("message", "cr\nonly", "1"),
        ("message", "你好 😀", "2"),
        ("message", "", "2"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(whole, expected);
    for i in 0..=AWKWARD.len() {
        let (a, b) = AWKWARD.split_at(i);
        assert_eq!(messages_of(vec![a, b]).await, expected, "split at {i}");
        for j in i..=AWKWARD.len() {
            let (b, c) = AWKWARD[i..].split_at(j - i);
            assert_eq!(
                messages_of(vec![a, b, c]).await,
                expected,
                "split at {i} and {j}"
            );
        }
    }
    // One byte per frame.
    let bytes: Vec<&'static [u8]> = AWKWARD.chunks(1).collect();
    assert_eq!(messages_of(bytes).await, expected);
}

// --- limits ----------------------------------------------------------------------------------

#[tokio::test]
async fn an_idle_connection_times_out_and_is_closed() {
    let fake = Fake::start(vec![vec![sse_head(), write("data: a\n\n"), Step::Hold]]).await;
    let events = get(&fake)
        .idle_timeout(300 * MS)
        .reconnect(Reconnect::Never)
        .stream();
    let drained = drain(events).await;
    assert_eq!(drained.data(), ["a"]);
    assert!(matches!(
        drained.error,
        Some(ClientError::IdleTimeout(limit)) if limit == 300 * MS
    ));
    timeout(Duration::from_secs(5), fake.disconnected.notified())
        .await
        .expect("the client closed the idle connection");
}

#[tokio::test]
async fn an_idle_timeout_covers_waiting_for_the_response_and_reconnects() {
    let fake = Fake::start(vec![
        vec![Step::Hold],
        vec![sse_head(), write("data: b\n\n"), Step::Hold],
    ])
    .await;
    let events = get(&fake)
        .idle_timeout(300 * MS)
        .backoff(MS, MS)
        .stream()
        .messages();
    let first = timeout(Duration::from_secs(10), events.take(1).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(first[0].as_ref().unwrap().data, "b");
}

#[tokio::test]
async fn keep_alive_comments_keep_an_idle_timeout_away() {
    let mut script = vec![sse_head()];
    for _ in 0..8 {
        script.push(write(":\n"));
        script.push(Step::Sleep(100 * MS));
    }
    script.push(write("data: late\n\n"));
    let fake = Fake::start(vec![script]).await;
    let events = get(&fake)
        .idle_timeout(500 * MS)
        .reconnect(Reconnect::Never)
        .stream();
    let drained = drain(events).await;
    assert_eq!(drained.data(), ["late"]);
    assert!(drained.error.is_none(), "{:?}", drained.error);
}

#[tokio::test]
async fn an_event_over_the_maximum_size_ends_the_stream_after_the_events_before_it() {
    let big = format!("data: {}\n\n", "x".repeat(2000));
    let fake = Fake::start(vec![vec![
        sse_head(),
        write("data: small\n\n"),
        write(&big),
        write("data: after\n\n"),
    ]])
    .await;
    let drained = drain(get(&fake).max_event_size(1000).backoff(MS, MS).stream()).await;
    assert_eq!(drained.data(), ["small"]);
    assert!(matches!(
        drained.error,
        Some(ClientError::EventTooLarge(1000))
    ));
    settle().await;
    assert_eq!(fake.requests().len(), 1, "not retried");
}

#[tokio::test]
async fn a_one_mebibyte_single_line_event_arrives_whole() {
    let mut body = b"data: ".to_vec();
    body.extend_from_slice(&vec![b'y'; 1 << 20]);
    body.extend_from_slice(b"\n\n");
    let fake = Fake::start(vec![vec![sse_head(), Step::Write(body)]]).await;
    let drained = drain(get(&fake).reconnect(Reconnect::Never).stream()).await;
    let data = drained.data();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].len(), 1 << 20);
    assert!(data[0].bytes().all(|b| b == b'y'));
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection_at_once() {
    let fake = Fake::start(vec![vec![sse_head(), write("data: a\n\n"), Step::Hold]]).await;
    let mut messages = get(&fake).stream().messages();
    let first = timeout(Duration::from_secs(10), messages.next())
        .await
        .unwrap();
    assert_eq!(first.unwrap().unwrap().data, "a");
    drop(messages);
    timeout(Duration::from_secs(2), fake.disconnected.notified())
        .await
        .expect("the server saw the client leave");
}

// --- any tower service -----------------------------------------------------------------------

#[tokio::test]
async fn any_tower_service_carries_the_stream_such_as_an_axum_router_in_process() {
    let app = axum::Router::new().route(
        "/stream",
        axum::routing::post(|question: String| async move {
            let (emitter, body) = tower_sse::channel(4);
            tokio::spawn(async move {
                for word in question.split(' ') {
                    let _ = emitter.send(tower_sse::Event::new().data(word)).await;
                }
                emitter.complete();
            });
            tower_sse::response(body)
        }),
    );
    let request = Request::post("/stream").body("a b c").unwrap();
    let messages: Vec<String> = EventSource::with_service(app, request)
        // The router takes any body type: name one.
        .stream::<axum::body::Body, _>()
        .messages()
        .map(|message| message.unwrap().data)
        .collect()
        .await;
    assert_eq!(messages, ["a", "b", "c"]);
}

#[tokio::test]
async fn the_built_in_client_refuses_uris_it_cannot_send_to_instead_of_retrying() {
    for uri in ["https://127.0.0.1:1/events", "/events"] {
        let events = EventSource::get(uri.parse().unwrap())
            .backoff(MS, MS)
            .stream();
        let drained = drain(events).await;
        assert!(drained.items.is_empty());
        match drained.error {
            Some(ClientError::UnsupportedUri(got)) => assert_eq!(got, uri),
            other => panic!("{uri}: {other:?}"),
        }
    }
}
