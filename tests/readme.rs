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

const README: &str = include_str!("../README.md");

/// The fenced code blocks of the README with this info string, in order.
fn blocks(info: &str) -> Vec<&'static str> {
    let fence = format!("```{info}\n");
    README
        .split(fence.as_str())
        .skip(1)
        .map(|rest| {
            let end = rest
                .find("```")
                .expect("an unclosed code block in the README");
            &rest[..end]
        })
        .collect()
}

#[test]
fn the_readme_shows_the_code_this_file_runs() {
    let this_file = include_str!("readme.rs");
    let quick_start = blocks("rust,ignore")
        .into_iter()
        .find(|block| block.contains("channel(16)"))
        .expect("the README's quick start");
    for line in quick_start
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        assert!(
            this_file.contains(line),
            "the README's quick start has a line this test does not run: {line:?}"
        );
    }
    assert!(README.contains(r#"tower-sse = { version = "0.1", features = ["axum"] }"#));
}

#[test]
fn the_readme_curl_lines_work_in_zsh() {
    // zsh takes an unquoted `?` or `*` for a glob and `&` ends the command: every URL with one
    // must be quoted.
    let mut curls = 0;
    for block in blocks("sh") {
        for word in block.split_whitespace() {
            if word.contains("://") {
                curls += 1;
                let quoted = word.starts_with('\'') || word.starts_with('"');
                assert!(
                    quoted || !word.contains(['?', '&', '*', '[']),
                    "unquoted URL in a README command: {word}"
                );
            }
        }
    }
    assert!(
        curls >= 3,
        "only {curls} URLs found in the README's commands"
    );
}

#[test]
fn the_readme_recommends_the_tower_http_order_that_tests_tower_http_runs() {
    let block = blocks("rust,ignore")
        .into_iter()
        .find(|block| block.contains("TraceLayer"))
        .expect("the README's tower-http order");
    let order: Vec<&str> = block
        .split(".layer(")
        .skip(2) // the text before the first `.layer(`, and the router's `.layer(ServiceBuilder`
        .map(|rest| rest.split(['(', ':']).next().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "TraceLayer",
            "RequestBodyLimitLayer",
            "CorsLayer",
            "TimeoutLayer",
            "CompressionLayer",
            "SseLayer"
        ]
    );
    let tested = include_str!("tower_http.rs");
    assert!(tested.contains("trace, limit, cors, timeout_layer, compression, sse;"));
}
