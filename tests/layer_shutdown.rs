//! Graceful shutdown with `SseLayer` on real servers: `axum::serve` with 200 open event streams,
//! and hyper-util's graceful shutdown over HTTP/1.1 and HTTP/2, both return promptly and every
//! client gets the final event and a clean end.

mod common;
mod layer_support;

use std::{
    future::IntoFuture,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{routing::get as route_get, Router};
use common::{get, read_body, Proto};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use layer_support::{read_until_suffix, Timed};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_sse::{Event, SseEmitter, SseLayer};

const FINAL_EVENT: &str = "event: shutdown\ndata: bye\n\n";

/// An app whose every `GET /events` is an open event stream fed by an emitter that is never
/// completed; the emitters are kept alive in `emitters`.
fn app(token: &CancellationToken, emitters: Arc<Mutex<Vec<SseEmitter>>>) -> Router {
    let layer = SseLayer::new()
        .graceful_shutdown(token.clone())
        .shutdown_event(Event::new().event("shutdown").unwrap().data("bye"));
    Router::new()
        .route(
            "/events",
            route_get(move || {
                let emitters = emitters.clone();
                async move {
                    let (emitter, body) = tower_sse::channel(8);
                    emitter.try_send("hello").unwrap();
                    emitters.lock().unwrap().push(emitter);
                    tower_sse::response(body)
                }
            }),
        )
        .layer(layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_serve_returns_within_a_second_with_200_open_streams() {
    const CLIENTS: usize = 200;
    let token = CancellationToken::new();
    let emitters = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        axum::serve(listener, app(&token, emitters.clone()))
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .into_future(),
    );

    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (client, response) = get(addr, Proto::Http1, "/events").await;
        let mut body = response.into_body();
        read_until_suffix(&mut body, &mut Timed::default(), b"data: hello\n\n").await;
        clients.push((client, tokio::spawn(read_body(body))));
    }
    assert_eq!(emitters.lock().unwrap().len(), CLIENTS);

    let signalled = Instant::now();
    token.cancel();
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("axum::serve did not return within 1 s of the signal")
        .unwrap()
        .unwrap();
    let took = signalled.elapsed();

    for (i, (_client, reader)) in clients.into_iter().enumerate() {
        let rest = reader.await.unwrap();
        assert!(rest.error.is_none(), "client {i}: {:?}", rest.error);
        assert_eq!(rest.text(), FINAL_EVENT, "client {i}");
    }
    // Every producer learns why its stream ended.
    for emitter in emitters.lock().unwrap().iter() {
        assert!(emitter.is_closed());
    }
    println!("axum::serve returned {took:?} after the signal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_util_graceful_shutdown_completes_over_http1_and_http2() {
    let token = CancellationToken::new();
    let emitters = Arc::new(Mutex::new(Vec::new()));
    let service = app(&token, emitters.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let token = token.clone();
        tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let (stream, _) = accepted.unwrap();
                        let service = TowerToHyperService::new(service.clone());
                        let connection = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .into_owned();
                        let connection = graceful.watch(connection);
                        tokio::spawn(async move {
                            let _ = connection.await;
                        });
                    }
                    () = token.cancelled() => break,
                }
            }
            graceful.shutdown().await;
        })
    };

    let mut clients = Vec::new();
    for proto in [Proto::Http1, Proto::Http2, Proto::Http1, Proto::Http2] {
        let (client, response) = get(addr, proto, "/events").await;
        let mut body = response.into_body();
        read_until_suffix(&mut body, &mut Timed::default(), b"data: hello\n\n").await;
        clients.push((proto, client, tokio::spawn(read_body(body))));
    }

    token.cancel();
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("the graceful shutdown did not complete within 1 s of the signal")
        .unwrap();
    for (proto, _client, reader) in clients {
        let rest = reader.await.unwrap();
        assert!(rest.error.is_none(), "{proto:?}: {:?}", rest.error);
        assert_eq!(rest.text(), FINAL_EVENT, "{proto:?}");
    }
}
