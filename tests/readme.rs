//! The README's quick start, as written there, served by `axum::serve` and read by a client.
#![cfg(feature = "axum")]

mod common;

use axum::{routing::post, Router};
use tower_sse::{channel, EventReceiver, SseBody, SseLayer};

async fn stream() -> SseBody<EventReceiver> {
    let (emitter, body) = channel(16);
    tokio::spawn(async move {
        for piece in ["Hel", "lo", "!"] {
            if emitter.send(piece).await.is_err() {
                return; // the client went away
            }
        }
        emitter.complete();
    });
    body
}

#[tokio::test]
async fn the_quick_start_streams_its_pieces() {
    let app: Router = Router::new()
        .route("/stream", post(stream))
        .layer(SseLayer::new()); // keep-alives, headers, disconnects, shutdown

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut client = common::Client::connect(addr, common::Proto::Http1).await;
    let response = client.post("/stream").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let received = common::read_body(response.into_body()).await;
    assert!(received.error.is_none());
    assert_eq!(received.text(), "data: Hel\n\ndata: lo\n\ndata: !\n\n");
}
