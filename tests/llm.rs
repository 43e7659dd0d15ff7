//! The LLM protocol writers over real sockets: served through `SseLayer` by hyper on
//! 127.0.0.1:0 (HTTP/1.1 and HTTP/2), read by a hyper client and the crate's parser. Every
//! event carries JSON data (or `[DONE]`), none carries an id, keep-alives are comments between
//! events, and a client that leaves is seen by the writer.
#![cfg(feature = "llm")]

mod common;
mod layer_support;

use std::{convert::Infallible, time::Duration};

use common::{read_at_least, read_body, Client, Proto};
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower::{service_fn, Layer};
use tower_sse::{
    llm::{ChatCompletionStream, MessageStream, ResponseStream, StreamError},
    CloseReason, EventReceiver, SseBody, SseEmitter, SseLayer,
};

const PIECES: [&str; 4] = [" Hello", ",", " 世界", " 😀\n\n"];

/// A pause between pieces, long enough for a keep-alive to fall in between.
const PAUSE: Duration = Duration::from_millis(40);

/// What the server tells the test when a writer failed because its client left.
type Left = mpsc::UnboundedSender<(StreamError, CloseReason)>;

/// Streams [`PIECES`] with the writer the path names, then ends it the protocol's way.
fn answer(path: &str, left: Left) -> Response<SseBody<EventReceiver>> {
    let (emitter, body) = tower_sse::channel(4);
    let path = path.to_owned();
    tokio::spawn(async move {
        let result = match path.as_str() {
            "/chat" => {
                chat(ChatCompletionStream::new(emitter, "chatcmpl-1", "m", 1).include_usage(true))
                    .await
            }
            "/responses" => responses(ResponseStream::new(emitter, "resp_1", "m", 1)).await,
            _ => messages(MessageStream::new(emitter, "msg_1", "m")).await,
        };
        if let Err((error, reason)) = result {
            let _ = left.send((error, reason));
        }
    });
    tower_sse::response(body)
}

type Ended = Result<(), (StreamError, CloseReason)>;

/// A writer's failure, with why its stream is over.
async fn settle(result: Result<(), StreamError>, emitter: &SseEmitter) -> Ended {
    match result {
        Ok(()) => Ok(()),
        Err(error) => Err((error, emitter.closed().await)),
    }
}

async fn chat(mut chunks: ChatCompletionStream) -> Ended {
    let run = async {
        for piece in PIECES {
            tokio::time::sleep(PAUSE).await;
            chunks.content(piece).await?;
        }
        chunks.finish(0, "stop").await?;
        chunks
            .usage(&json!({"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}))
            .await?;
        chunks.done().await
    };
    settle(run.await, chunks.emitter()).await
}

async fn responses(mut stream: ResponseStream) -> Ended {
    let run = async {
        stream.start().await?;
        stream.begin_message("msg_1").await?;
        for piece in PIECES {
            tokio::time::sleep(PAUSE).await;
            stream.text_delta(piece).await?;
        }
        stream.complete(&json!({})).await
    };
    settle(run.await, stream.emitter()).await
}

async fn messages(mut message: MessageStream) -> Ended {
    let run = async {
        message
            .start(&json!({"input_tokens": 1, "output_tokens": 1}))
            .await?;
        message.begin_text().await?;
        for piece in PIECES {
            tokio::time::sleep(PAUSE).await;
            message.text_delta(piece).await?;
        }
        message.end_block().await?;
        message
            .finish("end_turn", &json!({"output_tokens": 4}))
            .await
    };
    settle(run.await, message.emitter()).await
}

/// A server answering every path with [`answer`], behind an `SseLayer` with quick keep-alives.
async fn server() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<(StreamError, CloseReason)>,
) {
    let (left, gone) = mpsc::unbounded_channel();
    let app = service_fn(move |request: Request<Incoming>| {
        let left = left.clone();
        async move { Ok::<_, Infallible>(answer(request.uri().path(), left)) }
    });
    let layer = SseLayer::new().keep_alive(Duration::from_millis(10));
    (layer_support::serve_service(layer.layer(app)).await, gone)
}

#[tokio::test]
async fn every_event_is_json_without_an_id_and_keep_alives_are_comments() {
    let (addr, _gone) = server().await;
    for proto in [Proto::Http1, Proto::Http2] {
        for path in ["/chat", "/responses", "/messages"] {
            let mut client = Client::connect(addr, proto).await;
            let response = client.post(path).await;
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            let received = read_body(response.into_body()).await;
            assert!(received.error.is_none(), "{path}: {:?}", received.error);
            let text = received.text();
            assert!(
                text.contains("\n:\n"),
                "{path} over {proto:?}: no keep-alive in {text:?}"
            );
            assert!(!text
                .lines()
                .any(|line| line.starts_with("id:") || line.starts_with("retry:")));
            let events = received.events();
            let mut answer = String::new();
            for event in &events {
                assert_eq!(event.last_event_id, "", "{path}: an id was sent");
                if event.data == "[DONE]" {
                    continue;
                }
                let data: Value = serde_json::from_str(&event.data)
                    .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {:?}", event.data));
                let piece = match path {
                    "/chat" => data["choices"][0]["delta"]["content"].as_str(),
                    "/responses" if event.event == "response.output_text.delta" => {
                        data["delta"].as_str()
                    }
                    "/messages" if event.event == "content_block_delta" => {
                        data["delta"]["text"].as_str()
                    }
                    _ => None,
                };
                answer.push_str(piece.unwrap_or(""));
                if path != "/chat" {
                    assert_eq!(data["type"], event.event, "{path}: the name is the type");
                }
            }
            assert_eq!(answer, PIECES.concat(), "{path} over {proto:?}");
            let last = events.last().unwrap();
            match path {
                "/chat" => assert_eq!(last.data, "[DONE]"),
                "/responses" => assert_eq!(last.event, "response.completed"),
                _ => assert_eq!(last.event, "message_stop"),
            }
        }
    }
}

#[tokio::test]
async fn a_client_that_leaves_is_seen_by_every_writer() {
    let (addr, mut gone) = server().await;
    for proto in [Proto::Http1, Proto::Http2] {
        for path in ["/chat", "/responses", "/messages"] {
            let mut client = Client::connect(addr, proto).await;
            let mut body = client.post(path).await.into_body();
            let mut bytes = Vec::new();
            read_at_least(&mut body, &mut bytes, 1).await;
            drop(body);
            client.connection.abort();
            let (error, reason) = tokio::time::timeout(Duration::from_secs(10), gone.recv())
                .await
                .expect("the writer noticed within 10 s")
                .unwrap();
            assert!(matches!(error, StreamError::Closed(_)), "{path}: {error}");
            assert_eq!(reason, CloseReason::Disconnected, "{path} over {proto:?}");
        }
    }
}
