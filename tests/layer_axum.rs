//! `SseConnection` as an axum extractor (feature `axum`), over a real `axum::serve`.
#![cfg(feature = "axum")]

mod common;
mod layer_support;

use std::{future::IntoFuture, time::Duration};

use axum::{routing::get as route_get, Router};
use common::{get, Proto};
use http::StatusCode;
use layer_support::{read_until_suffix, Timed};
use tokio::{net::TcpListener, sync::mpsc};
use tower_sse::{CloseReason, SseConnection, SseLayer};

/// Serves `router` with `axum::serve` on a fresh loopback port.
async fn serve(router: Router) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, router).into_future());
    addr
}

#[tokio::test]
async fn handlers_extract_the_connection_and_learn_when_the_client_leaves() {
    let (reasons_tx, mut reasons) = mpsc::unbounded_channel();
    let router = Router::new()
        .route(
            "/events",
            route_get(move |connection: SseConnection| {
                let reasons_tx = reasons_tx.clone();
                async move {
                    let (emitter, body) = tower_sse::channel(8);
                    emitter.try_send("hello").unwrap();
                    tokio::spawn(async move {
                        let layer = connection.closed().await;
                        let producer = emitter.closed().await;
                        let _ = reasons_tx.send((layer, producer));
                    });
                    body
                }
            }),
        )
        .layer(SseLayer::new());
    let addr = serve(router).await;
    for proto in [Proto::Http1, Proto::Http2] {
        let (client, response) = get(addr, proto, "/events").await;
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let mut body = response.into_body();
        read_until_suffix(&mut body, &mut Timed::default(), b"data: hello\n\n").await;
        drop(body);
        client.connection.abort();
        let reasons = tokio::time::timeout(Duration::from_secs(2), reasons.recv())
            .await
            .expect("no report within 2 s")
            .unwrap();
        assert_eq!(
            reasons,
            (CloseReason::Disconnected, CloseReason::Disconnected),
            "{proto:?}"
        );
    }
}

#[tokio::test]
async fn without_the_layer_the_extractor_rejects_the_request() {
    let router = Router::new().route("/", route_get(|_connection: SseConnection| async {}));
    let addr = serve(router).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}
