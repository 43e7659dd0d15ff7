//! `Option<SseConnection>` as an axum extractor (feature `axum`): the handle behind `SseLayer`,
//! `None` without it, never a rejection; over a real `axum::serve`.
#![cfg(feature = "axum")]

mod common;

use std::future::IntoFuture;

use axum::{routing::get as route_get, Router};
use common::{get, read_body, Proto};
use http::StatusCode;
use tokio::net::TcpListener;
use tower_sse::{SseConnection, SseLayer};

/// Answers whether the handler got a handle, and whether it is still open.
async fn handler(connection: Option<SseConnection>) -> String {
    match connection {
        Some(connection) => format!("handle, open: {}", connection.close_reason().is_none()),
        None => "no handle".to_owned(),
    }
}

async fn serve(router: Router) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, router).into_future());
    addr
}

#[tokio::test]
async fn the_optional_extractor_is_the_handle_behind_the_layer_and_none_without_it() {
    let with_layer = Router::new()
        .route("/", route_get(handler))
        .layer(SseLayer::new());
    let without_layer = Router::new().route("/", route_get(handler));
    for (router, want) in [
        (with_layer, "handle, open: true"),
        (without_layer, "no handle"),
    ] {
        let addr = serve(router).await;
        for proto in [Proto::Http1, Proto::Http2] {
            let (_client, response) = get(addr, proto, "/").await;
            assert_eq!(response.status(), StatusCode::OK, "{want} over {proto:?}");
            assert_eq!(
                read_body(response.into_body()).await.text(),
                want,
                "{proto:?}"
            );
        }
    }
}
