//! How `SseLayer` reports the end of each response, over real sockets: the `SseConnection`
//! handle and the `on_close` hook, for every way a stream ends.

mod common;
mod layer_support;

use std::{
    convert::Infallible,
    io,
    task::Poll,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{get, read_body, Client, Proto};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use layer_support::{
    accept, closed_within, read_until, read_until_suffix, recording_hook, scripted, serve_service,
    Timed,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_sse::{CloseInfo, CloseReason, Event, SseConnection, SseLayer};

const SSE: &str = "text/event-stream";
const SOON: Duration = Duration::from_secs(2);

/// The single report the hook received, once the handle reported.
async fn only_report(
    connection: &SseConnection,
    seen: &std::sync::Mutex<Vec<CloseInfo>>,
) -> CloseInfo {
    closed_within(connection, SOON).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    seen[0]
}

#[tokio::test]
async fn client_going_away_is_disconnected() {
    for proto in [Proto::Http1, Proto::Http2] {
        let (hook, seen) = recording_hook();
        let (addr, mut accepted) = scripted(SseLayer::new().on_close(hook), SSE).await;
        let (client, response) = get(addr, proto, "/").await;
        let app = accept(&mut accepted).await;
        app.send("data: a\n\n").await;
        let mut body = response.into_body();
        read_until_suffix(&mut body, &mut Timed::default(), b"data: a\n\n").await;
        assert_eq!(app.connection.close_reason(), None);

        let gone = Instant::now();
        drop(body);
        match proto {
            // HTTP/1.1: the socket closes.
            Proto::Http1 => client.connection.abort(),
            // HTTP/2: the stream is reset; the connection stays up.
            Proto::Http2 => {}
        }
        let info = only_report(&app.connection, &seen).await;
        assert_eq!(info.reason, CloseReason::Disconnected, "{proto:?}");
        assert!(gone.elapsed() < Duration::from_millis(500), "{proto:?}");
        assert_eq!((info.events, info.bytes), (1, 9), "{proto:?}");
        assert!(
            app.feed.is_closed(),
            "{proto:?}: the inner body was not dropped"
        );
    }
}

#[tokio::test]
async fn inner_body_end_is_completed() {
    for proto in [Proto::Http1, Proto::Http2] {
        let (hook, seen) = recording_hook();
        let layer = SseLayer::new()
            .keep_alive(Duration::from_millis(50))
            .on_close(hook);
        let (addr, mut accepted) = scripted(layer, SSE).await;
        let (_client, response) = get(addr, proto, "/").await;
        let app = accept(&mut accepted).await;
        app.send("data: a\n\n").await;
        tokio::time::sleep(Duration::from_millis(130)).await;
        app.send("data: b\r\n\r\n").await;
        let connection = app.connection.clone();
        drop(app);
        let received = read_body(response.into_body()).await;
        assert!(received.error.is_none(), "{proto:?}: {:?}", received.error);
        let text = received.text();
        assert!(text.starts_with("data: a\n\n:\n") && text.ends_with(":\ndata: b\r\n\r\n"));

        let info = only_report(&connection, &seen).await;
        assert_eq!(info.reason, CloseReason::Completed, "{proto:?}");
        assert_eq!(info.events, 2, "keep-alives are no events");
        assert_eq!(info.bytes, received.bytes.len() as u64);
        assert!(info.duration >= Duration::from_millis(120), "{info:?}");
    }
}

#[tokio::test]
async fn inner_body_error_is_error() {
    for proto in [Proto::Http1, Proto::Http2] {
        let (addr, mut accepted) = scripted(SseLayer::new(), SSE).await;
        let (_client, response) = get(addr, proto, "/").await;
        let app = accept(&mut accepted).await;
        app.send("data: a\n\n").await;
        app.feed.send(Err("broken".into())).await.unwrap();
        let received = read_body(response.into_body()).await;
        assert!(
            received.error.is_some(),
            "{proto:?}: the client saw a clean end"
        );
        assert_eq!(
            closed_within(&app.connection, SOON).await,
            CloseReason::Error,
            "{proto:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_right_after_events_aborts_only_once_they_are_written() {
    // The error right behind the events: hyper drops a failed response's unwritten
    // frames (over HTTP/2, those its connection task has not yet taken), so the layer holds
    // the error back until the connection has had time to write them.
    let app = tower::service_fn(|_: Request<Incoming>| async {
        // Each event alone, the stream pending (and ready again at once) between them.
        let mut step = 0;
        let events = futures::stream::poll_fn(move |cx| {
            step += 1;
            match step {
                1 => Poll::Ready(Some(Ok(Event::from("one")))),
                3 => Poll::Ready(Some(Ok(Event::from("two")))),
                5 => Poll::Ready(Some(Err(io::Error::other("producer failed")))),
                _ if step < 5 => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                _ => Poll::Ready(None),
            }
        });
        Ok::<_, Infallible>(tower_sse::response(tower_sse::SseBody::new(events)))
    });
    let addr = serve_service(SseLayer::new().layer(app)).await;
    // One round in a few hundred lost the events over HTTP/2 before the layer held the error.
    for (proto, rounds) in [(Proto::Http1, 50), (Proto::Http2, 400)] {
        for round in 0..rounds {
            let (_client, response) = get(addr, proto, "/").await;
            let received = read_body(response.into_body()).await;
            assert_eq!(
                received.text(),
                "data: one\n\ndata: two\n\n",
                "{proto:?}, round {round}"
            );
            assert!(
                received.error.is_some(),
                "{proto:?}: the response must abort"
            );
        }
    }
}

/// Serves `layer` around an app whose service fails, or never answers, reporting each request's
/// handle to the test.
async fn serve_unanswered(
    layer: SseLayer,
    fail: bool,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<SseConnection>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = tower::service_fn(move |request: Request<Incoming>| {
        let _ = tx.send(request.extensions().get::<SseConnection>().unwrap().clone());
        async move {
            if fail {
                return Err(io::Error::other("no response"));
            }
            std::future::pending::<()>().await;
            Ok(Response::new(Empty::<Bytes>::new()))
        }
    });
    (serve_service(layer.layer(app)).await, rx)
}

#[tokio::test]
async fn inner_service_error_is_error() {
    let (hook, seen) = recording_hook();
    let (addr, mut connections) = serve_unanswered(SseLayer::new().on_close(hook), true).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(SOON, stream.read_to_end(&mut answer)).await;
    let connection = connections.recv().await.unwrap();
    let info = only_report(&connection, &seen).await;
    assert_eq!(info.reason, CloseReason::Error);
    assert_eq!((info.events, info.bytes), (0, 0));
}

#[tokio::test]
async fn client_leaving_before_the_response_is_disconnected() {
    let (addr, mut connections) = serve_unanswered(SseLayer::new(), false).await;
    let mut client = Client::connect(addr, Proto::Http2).await;
    // The request is sent, then abandoned: HTTP/2 resets the stream.
    let abandoned = tokio::time::timeout(Duration::from_millis(200), client.get("/")).await;
    assert!(abandoned.is_err());
    let connection = connections.recv().await.unwrap();
    assert_eq!(
        closed_within(&connection, SOON).await,
        CloseReason::Disconnected
    );
}

#[tokio::test]
async fn max_duration_ends_at_a_boundary_after_the_final_event() {
    let layer = |limit| {
        SseLayer::new()
            .keep_alive(Duration::from_millis(100))
            .max_duration(Duration::from_millis(limit))
            .max_duration_event(Event::new().retry(Duration::from_secs(2)))
    };
    for proto in [Proto::Http1, Proto::Http2] {
        // Idle: keep-alives until the limit, then the final event and a clean end.
        let (addr, mut accepted) = scripted(layer(350), SSE).await;
        let (_client, response) = get(addr, proto, "/").await;
        let started = Instant::now();
        let app = accept(&mut accepted).await;
        app.send("data: a\n\n").await;
        let mut body = response.into_body();
        let mut timed = Timed::default();
        assert!(read_until(&mut body, &mut timed, started + SOON).await);
        let ended = started.elapsed();
        assert_eq!(
            String::from_utf8(timed.bytes()).unwrap(),
            "data: a\n\n:\n:\n:\nretry: 2000\n\n",
            "{proto:?}"
        );
        assert!(ended >= Duration::from_millis(300) && ended < Duration::from_secs(1));
        assert_eq!(
            closed_within(&app.connection, SOON).await,
            CloseReason::TimedOut
        );

        // Mid-event: the event in flight is finished; the next one is not started.
        let (addr, mut accepted) = scripted(layer(100), SSE).await;
        let (_client, response) = get(addr, proto, "/").await;
        let app = accept(&mut accepted).await;
        app.send("data: a").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(app.connection.close_reason(), None);
        app.send("b\n\ndata: c\n\n").await;
        let received = read_body(response.into_body()).await;
        assert!(received.error.is_none());
        assert_eq!(received.text(), "data: ab\n\nretry: 2000\n\n", "{proto:?}");
        assert_eq!(
            closed_within(&app.connection, SOON).await,
            CloseReason::TimedOut
        );
    }
}

#[tokio::test]
async fn graceful_shutdown_ends_every_stream_after_its_event_in_flight() {
    let token = CancellationToken::new();
    let (hook, seen) = recording_hook();
    let layer = SseLayer::new()
        .graceful_shutdown(token.clone())
        .shutdown_event(Event::new().event("bye").unwrap().data(""))
        .on_close(hook);
    let (addr, mut accepted) = scripted(layer, SSE).await;
    let (_c1, idle) = get(addr, Proto::Http1, "/").await;
    let idle_app = accept(&mut accepted).await;
    let (_c2, busy) = get(addr, Proto::Http2, "/").await;
    let busy_app = accept(&mut accepted).await;
    busy_app.send("data: a\n\ndata: par").await;
    // The signal comes once the partial event is on its way.
    let mut busy = busy.into_body();
    let mut busy_timed = Timed::default();
    read_until_suffix(&mut busy, &mut busy_timed, b"data: par").await;

    token.cancel();
    let idle = read_body(idle.into_body()).await;
    assert!(idle.error.is_none());
    assert_eq!(idle.text(), "event: bye\ndata: \n\n");
    assert_eq!(
        closed_within(&idle_app.connection, SOON).await,
        CloseReason::Shutdown
    );

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(busy_app.connection.close_reason(), None, "ended mid-event");
    busy_app.send("tial\r\n\r\ndata: next\n\n").await;
    let rest = read_body(busy).await;
    assert!(rest.error.is_none());
    assert_eq!(
        String::from_utf8(busy_timed.bytes()).unwrap() + rest.text(),
        "data: a\n\ndata: partial\r\n\r\nevent: bye\ndata: \n\n"
    );
    assert_eq!(
        closed_within(&busy_app.connection, SOON).await,
        CloseReason::Shutdown
    );

    // Streams that start after the signal end at once.
    let (_c3, late) = get(addr, Proto::Http1, "/").await;
    let late_app = accept(&mut accepted).await;
    assert_eq!(
        read_body(late.into_body()).await.text(),
        "event: bye\ndata: \n\n"
    );
    assert_eq!(
        late_app.connection.close_reason(),
        Some(CloseReason::Shutdown)
    );

    let seen = seen.lock().unwrap();
    let events: Vec<_> = seen.iter().map(|info| (info.reason, info.events)).collect();
    assert_eq!(
        events,
        [
            (CloseReason::Shutdown, 1),
            (CloseReason::Shutdown, 3),
            (CloseReason::Shutdown, 1)
        ]
    );
}

#[tokio::test]
async fn any_future_can_be_the_shutdown_signal() {
    let (fire, signal) = tokio::sync::oneshot::channel::<()>();
    let layer = SseLayer::new().graceful_shutdown_on(async move {
        let _ = signal.await;
    });
    let (addr, mut accepted) = scripted(layer, SSE).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    let app = accept(&mut accepted).await;
    app.send("data: a\n\n").await;
    let mut body = response.into_body();
    read_until_suffix(&mut body, &mut Timed::default(), b"data: a\n\n").await;
    fire.send(()).unwrap();
    let mut timed = Timed::default();
    assert!(read_until(&mut body, &mut timed, Instant::now() + SOON).await);
    assert!(timed.frames.is_empty(), "no final event was set: {timed:?}");
    assert_eq!(
        closed_within(&app.connection, SOON).await,
        CloseReason::Shutdown
    );
}

#[tokio::test]
async fn other_responses_report_completed_or_disconnected() {
    let (tx, mut connections) = mpsc::unbounded_channel();
    let app = tower::service_fn(move |request: Request<Incoming>| {
        let _ = tx.send(request.extensions().get::<SseConnection>().unwrap().clone());
        let body = match request.uri().path() {
            "/empty" => Empty::new().map_err(Into::into).boxed(),
            "/full" => Full::new(Bytes::from_static(b"hello"))
                .map_err(Into::into)
                .boxed(),
            _ => http_body_util::StreamBody::new(futures::stream::pending::<
                Result<http_body::Frame<Bytes>, tower_sse::BoxError>,
            >())
            .boxed(),
        };
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    let addr = serve_service(SseLayer::new().layer(app)).await;
    for proto in [Proto::Http1, Proto::Http2] {
        for (path, expected) in [
            ("/empty", CloseReason::Completed),
            ("/full", CloseReason::Completed),
            ("/pending", CloseReason::Disconnected),
        ] {
            let (client, response) = get(addr, proto, path).await;
            let connection = connections.recv().await.unwrap();
            if expected == CloseReason::Completed {
                let received = read_body(response.into_body()).await;
                assert!(received.error.is_none());
            } else {
                drop(response);
                client.connection.abort();
            }
            assert_eq!(
                closed_within(&connection, SOON).await,
                expected,
                "{proto:?} {path}"
            );
        }
    }
}

/// The layer's body says an event stream is over only once it handed over its end, even when
/// the inner body knew its end with its last frame (so TraceLayer's `on_eos`, outside, sees
/// it); any other body's end passes through as the inner body tells it.
#[tokio::test]
async fn a_stream_is_over_once_its_end_is_handed_over() {
    use http_body::Body as _;
    use tower::ServiceExt;

    for content_type in [SSE, "application/json"] {
        let (hook, seen) = recording_hook();
        let service = SseLayer::new().on_close(hook).layer(tower::service_fn(
            move |_: Request<Empty<Bytes>>| async move {
                let mut response = Response::new(Full::new(Bytes::from_static(b"data: a\n\n")));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(content_type),
                );
                Ok::<_, Infallible>(response)
            },
        ));
        let response = service.oneshot(Request::new(Empty::new())).await.unwrap();
        let mut body = std::pin::pin!(response.into_body());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(&frame.into_data().unwrap()[..], b"data: a\n\n");
        // The inner body has ended: the report goes out at once either way.
        assert_eq!(seen.lock().unwrap()[0].reason, CloseReason::Completed);
        let streaming = content_type == SSE;
        assert_eq!(body.is_end_stream(), !streaming, "{content_type}");
        assert!(body.frame().await.is_none(), "{content_type}");
        assert!(body.is_end_stream(), "{content_type}");
        assert_eq!(seen.lock().unwrap().len(), 1, "{content_type}");
    }
}
