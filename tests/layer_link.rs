//! One truth about why a stream ended: a channel linked to its request's `SseConnection`
//! (built in a handler behind the layer, or linked by hand) stops taking events as soon as
//! the layer decides to end the stream, and its producer, the handle and `on_close` all report
//! the same reason.
#![cfg(feature = "axum")]

mod common;
mod layer_support;

use std::{
    future::IntoFuture,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{http::StatusCode, routing::get as route_get, Router};
use common::{get, read_body, Proto};
use layer_support::{closed_within, recording_hook};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_sse::{
    ChannelBuilder, CloseInfo, CloseReason, Event, SendErrorKind, SseConnection, SseEmitter,
    SseLayer, TrySendError,
};

const SOON: Duration = Duration::from_secs(5);

type Kept = Arc<Mutex<Vec<(SseConnection, SseEmitter)>>>;

/// Serves `app` on a loopback port.
async fn serve_router(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app).into_future());
    addr
}

/// Reads a whole response body of `path`, which must end cleanly.
async fn read_to_clean_end(addr: SocketAddr, proto: Proto, path: &str) {
    let (_client, response) = get(addr, proto, path).await;
    let received = read_body(response.into_body()).await;
    assert!(received.error.is_none(), "{:?}", received.error);
}

/// Serves `layer` around `/linked` (a channel built in the handler), `/spawned` (a channel
/// built in another task and linked by hand) and `/missing` (a 404 JSON answer).
async fn serve(layer: SseLayer) -> (SocketAddr, Kept) {
    let kept: Kept = Arc::default();
    let (linked, spawned) = (kept.clone(), kept.clone());
    let app = Router::new()
        .route(
            "/linked",
            route_get(move |connection: SseConnection| async move {
                let (emitter, body) = ChannelBuilder::new(4).build();
                emitter.try_send("hello").unwrap();
                linked.lock().unwrap().push((connection, emitter));
                body
            }),
        )
        .route(
            "/spawned",
            route_get(move |connection: SseConnection| async move {
                let (emitter, body) = tokio::spawn(async { tower_sse::channel(4) }).await.unwrap();
                connection.link(&emitter);
                emitter.try_send("hello").unwrap();
                spawned.lock().unwrap().push((connection, emitter));
                body
            }),
        )
        .route(
            "/missing",
            route_get(|| async { (StatusCode::NOT_FOUND, "{\"error\":\"no such thing\"}") }),
        )
        .layer(layer);
    let addr = serve_router(app).await;
    (addr, kept)
}

#[tokio::test]
async fn after_a_shutdown_every_view_reports_shutdown_and_no_event_is_taken() {
    let token = CancellationToken::new();
    let (hook, seen) = recording_hook();
    let layer = SseLayer::new()
        .graceful_shutdown(token.clone())
        .shutdown_event(Event::new().event("bye").unwrap().data(""))
        .on_close(hook);
    let (addr, kept) = serve(layer).await;
    let mut readers = Vec::new();
    for (path, proto) in [("/linked", Proto::Http1), ("/spawned", Proto::Http2)] {
        let (client, response) = get(addr, proto, path).await;
        readers.push((client, tokio::spawn(read_body(response.into_body()))));
    }
    token.cancel();
    for (_client, reader) in readers {
        let received = reader.await.unwrap();
        assert_eq!(received.text(), "data: hello\n\nevent: bye\ndata: \n\n");
    }
    let kept = std::mem::take(&mut *kept.lock().unwrap());
    assert_eq!(kept.len(), 2);
    for (connection, emitter) in kept {
        assert_eq!(
            closed_within(&connection, SOON).await,
            CloseReason::Shutdown
        );
        assert_eq!(emitter.closed().await, CloseReason::Shutdown);
        // The channel has room, but the stream is over: refused at once, with the reason.
        match emitter.try_send("late") {
            Err(TrySendError::Closed(_, reason)) => assert_eq!(reason, CloseReason::Shutdown),
            other => panic!("{other:?}"),
        }
        let error = emitter.send("late").await.unwrap_err();
        assert_eq!(error.kind(), SendErrorKind::Closed(CloseReason::Shutdown));
    }
    let reasons: Vec<CloseReason> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|info| info.reason)
        .collect();
    assert_eq!(reasons, [CloseReason::Shutdown, CloseReason::Shutdown]);
}

#[tokio::test]
async fn a_producer_learns_the_layers_reason_at_its_next_send() {
    // A stream that hits its time limit between two sends of its producer: the next send
    // fails at once, with the layer's reason (a send already waiting for room is woken the
    // same way; see `tests/stall.rs`).
    let (hook, seen) = recording_hook();
    let layer = SseLayer::new()
        .max_duration(Duration::from_millis(300))
        .on_close(hook);
    let waiting: Arc<Mutex<Option<tokio::task::JoinHandle<SendErrorKind>>>> = Arc::default();
    let slot = waiting.clone();
    let app = Router::new()
        .route(
            "/",
            route_get(move || async move {
                let (emitter, body) = ChannelBuilder::new(1).build();
                let producer = tokio::spawn(async move {
                    loop {
                        if let Err(error) = emitter.send("tick").await {
                            return error.kind();
                        }
                        tokio::time::sleep(Duration::from_millis(400)).await;
                    }
                });
                *slot.lock().unwrap() = Some(producer);
                body
            }),
        )
        .layer(layer);
    let addr = serve_router(app).await;
    read_to_clean_end(addr, Proto::Http1, "/").await;
    let producer = waiting.lock().unwrap().take().unwrap();
    // The producer was sleeping when the stream ended; its next send fails right away.
    let kind = tokio::time::timeout(Duration::from_millis(600), producer)
        .await
        .expect("the producer's send did not fail")
        .unwrap();
    assert_eq!(kind, SendErrorKind::Closed(CloseReason::TimedOut));
    assert_eq!(seen.lock().unwrap()[0].reason, CloseReason::TimedOut);
}

#[tokio::test]
async fn every_channel_linked_to_one_response_learns_its_end() {
    // Three channels built in one handler all link themselves (two of them feed no response:
    // their bodies are kept aside); the response ends on its time limit, and each of them
    // reports that reason and takes no more events.
    type Aside = tower_sse::SseBody<tower_sse::EventReceiver>;
    let emitters: Arc<Mutex<Vec<SseEmitter>>> = Arc::default();
    let aside: Arc<Mutex<Vec<Aside>>> = Arc::default();
    let (kept, kept_aside) = (emitters.clone(), aside.clone());
    let app = Router::new()
        .route(
            "/",
            route_get(move || async move {
                let (first, body) = ChannelBuilder::new(4).build();
                let (second, second_body) = ChannelBuilder::new(4).build();
                let (third, third_body) = ChannelBuilder::new(4).build();
                kept.lock().unwrap().extend([first, second, third]);
                kept_aside.lock().unwrap().extend([second_body, third_body]);
                body
            }),
        )
        .layer(SseLayer::new().max_duration(Duration::from_millis(200)));
    let addr = serve_router(app).await;
    read_to_clean_end(addr, Proto::Http1, "/").await;
    let emitters: Vec<SseEmitter> = emitters.lock().unwrap().drain(..).collect();
    assert_eq!(emitters.len(), 3);
    for (i, emitter) in emitters.iter().enumerate() {
        let reason = tokio::time::timeout(SOON, emitter.closed())
            .await
            .unwrap_or_else(|_| panic!("channel {i} never learned the end"));
        assert_eq!(reason, CloseReason::TimedOut, "channel {i}");
        assert!(matches!(
            emitter.try_send("late"),
            Err(TrySendError::Closed(_, CloseReason::TimedOut))
        ));
    }
}

#[tokio::test]
async fn a_channel_timeout_is_the_reason_the_layer_reports() {
    let (hook, seen) = recording_hook();
    let layer = SseLayer::new().on_close(hook);
    let app = Router::new()
        .route(
            "/",
            route_get(|| async {
                let (emitter, body) = ChannelBuilder::new(4)
                    .timeout(Duration::from_millis(200))
                    .build();
                tokio::spawn(async move { emitter.closed().await });
                body
            }),
        )
        .layer(layer);
    let addr = serve_router(app).await;
    read_to_clean_end(addr, Proto::Http2, "/").await;
    let seen: Vec<CloseInfo> = seen.lock().unwrap().clone();
    assert_eq!(seen[0].reason, CloseReason::TimedOut);
}

#[tokio::test]
async fn other_responses_say_what_they_were() {
    let (hook, seen) = recording_hook();
    let (addr, _kept) = serve(SseLayer::new().on_close(hook)).await;
    let (_client, response) = get(addr, Proto::Http1, "/missing").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    read_body(response.into_body()).await;
    let (_client, response) = get(addr, Proto::Http1, "/nowhere").await;
    read_body(response.into_body()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = seen.lock().unwrap();
    let what: Vec<_> = seen
        .iter()
        .map(|info| (info.reason, info.status, info.streaming))
        .collect();
    assert_eq!(
        what,
        [
            (CloseReason::Completed, Some(StatusCode::NOT_FOUND), false),
            (CloseReason::Completed, Some(StatusCode::NOT_FOUND), false),
        ]
    );
}
