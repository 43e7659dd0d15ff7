//! `SseLayer` around the other framings, over real sockets: the streaming headers, disconnect
//! detection, `on_close`, the time limit and graceful shutdown, each ending at an item boundary,
//! and never a keep-alive, comment or final event inside an NDJSON, JSON Lines, json-seq or
//! text body.

mod common;
mod layer_support;

use std::{
    convert::Infallible,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{get, read_body, Proto};
use http::{header::CONTENT_TYPE, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use layer_support::{
    accept, closed_within, read_until, read_until_suffix, recording_hook, scripted, serve_service,
    Timed,
};
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_sse::{framing::Ndjson, CloseReason, Event, SseLayer};

const SOON: Duration = Duration::from_secs(5);

/// A layer that would write keep-alives, a comment on open and final events into an event
/// stream: none of it may reach the other framings.
fn busy_layer() -> SseLayer {
    SseLayer::new()
        .keep_alive(Duration::from_millis(30))
        .open_comment("open")
        .max_duration_event(Event::new().data("max"))
        .shutdown_event(Event::new().data("bye"))
}

#[tokio::test]
async fn nothing_of_the_layer_goes_into_a_json_or_text_stream() {
    for (content_type, item) in [
        ("application/x-ndjson", &b"{\"a\":1}\n"[..]),
        ("application/jsonl; charset=utf-8", b"{\"a\":1}\n"),
        ("application/json-seq", b"\x1e{\"a\":1}\n"),
        ("text/plain; charset=utf-8", b"piece"),
    ] {
        for proto in [Proto::Http1, Proto::Http2] {
            let (addr, mut accepted) = scripted(busy_layer(), content_type).await;
            let (_client, response) = get(addr, proto, "/").await;
            assert_eq!(response.headers()["cache-control"], "no-cache");
            assert_eq!(response.headers()["x-accel-buffering"], "no");
            let app = accept(&mut accepted).await;
            app.send(Bytes::from_static(item)).await;
            // Ten keep-alive intervals of silence.
            tokio::time::sleep(Duration::from_millis(300)).await;
            app.send(Bytes::from_static(item)).await;
            drop(app);
            let received = read_body(response.into_body()).await;
            assert!(received.error.is_none(), "{content_type} {proto:?}");
            assert_eq!(
                received.bytes,
                [item, item].concat(),
                "{content_type} {proto:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_time_limit_ends_a_json_stream_after_the_line_in_flight() {
    for proto in [Proto::Http1, Proto::Http2] {
        let (hook, seen) = recording_hook();
        let layer = busy_layer()
            .max_duration(Duration::from_millis(300))
            .on_close(hook);
        let (addr, mut accepted) = scripted(layer, "application/x-ndjson").await;
        let started = Instant::now();
        let (_client, response) = get(addr, proto, "/").await;
        let app = accept(&mut accepted).await;
        app.send("{\"n\":1}\n{\"n\":").await;
        tokio::time::sleep(Duration::from_millis(450)).await;
        // The line in flight is finished; what follows it is not written.
        app.send("2}\n{\"n\":3}\n").await;
        let received = read_body(response.into_body()).await;
        assert!(received.error.is_none(), "{proto:?}: {:?}", received.error);
        assert_eq!(received.text(), "{\"n\":1}\n{\"n\":2}\n", "{proto:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            closed_within(&app.connection, SOON).await,
            CloseReason::TimedOut
        );
        let info = seen.lock().unwrap()[0];
        assert_eq!((info.reason, info.events), (CloseReason::TimedOut, 2));
        assert!(
            app.feed.is_closed(),
            "{proto:?}: the inner body was dropped"
        );
    }
}

#[tokio::test]
async fn graceful_shutdown_ends_a_json_stream_at_once_between_lines() {
    for proto in [Proto::Http1, Proto::Http2] {
        let shutdown = CancellationToken::new();
        let layer = busy_layer().graceful_shutdown(shutdown.clone());
        let (addr, mut accepted) = scripted(layer, "application/json-seq").await;
        let (_client, response) = get(addr, proto, "/").await;
        let app = accept(&mut accepted).await;
        app.send("\x1e{}\n").await;
        let mut body = response.into_body();
        let mut timed = Timed::default();
        read_until_suffix(&mut body, &mut timed, b"\x1e{}\n").await;
        let cancelled = Instant::now();
        shutdown.cancel();
        let ended = read_until(&mut body, &mut timed, Instant::now() + SOON).await;
        assert!(ended, "{proto:?}: the stream did not end cleanly");
        assert!(cancelled.elapsed() < Duration::from_secs(1), "{proto:?}");
        assert_eq!(timed.bytes(), b"\x1e{}\n", "{proto:?}: no shutdown event");
        assert_eq!(
            closed_within(&app.connection, SOON).await,
            CloseReason::Shutdown
        );
    }
}

#[tokio::test]
async fn a_producer_learns_that_an_ndjson_client_left() {
    for proto in [Proto::Http1, Proto::Http2] {
        let (hook, seen) = recording_hook();
        let app = {
            let (emitters_tx, emitters) = tokio::sync::mpsc::unbounded_channel();
            let service = tower::service_fn(move |_request: Request<Incoming>| {
                let (emitter, body) = tower_sse::framed_channel(Ndjson, 4);
                emitters_tx.send(emitter).unwrap();
                async move { Ok::<_, Infallible>(tower_sse::framed_response(body)) }
            });
            let layer = SseLayer::new().on_close(hook);
            (serve_service(layer.layer(service)).await, emitters)
        };
        let (addr, mut emitters) = app;
        let (client, response) = get(addr, proto, "/").await;
        let emitter = emitters.recv().await.unwrap();
        emitter.send(serde_json::json!({"n": 1})).await.unwrap();
        let mut body = response.into_body();
        read_until_suffix(&mut body, &mut Timed::default(), b"{\"n\":1}\n").await;
        drop(body);
        drop(client);
        let reason = tokio::time::timeout(SOON, emitter.closed())
            .await
            .expect("the producer never learned the client left");
        assert_eq!(reason, CloseReason::Disconnected, "{proto:?}");
        let info = seen.lock().unwrap()[0];
        assert_eq!(info.reason, CloseReason::Disconnected);
        assert_eq!((info.events, info.bytes), (1, 8));
    }
}

#[tokio::test]
async fn a_text_answer_of_known_length_is_no_stream() {
    let service = tower::service_fn(|_request: Request<Incoming>| async {
        let response = Response::builder()
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(b"not found")))
            .unwrap();
        Ok::<_, Infallible>(response)
    });
    let layer = busy_layer().max_duration(Duration::from_millis(1));
    let addr = serve_service(layer.layer(service)).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    assert_eq!(response.headers()["content-length"], "9");
    assert!(response.headers().get("x-accel-buffering").is_none());
    assert_eq!(read_body(response.into_body()).await.text(), "not found");
}
