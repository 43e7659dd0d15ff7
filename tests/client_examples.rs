//! `tower_sse::client` against the example servers, run as real processes: resuming their
//! `GET /events` feed, and their gateway mode (`UPSTREAM_URL`) in front of a fake
//! OpenAI-compatible upstream written here, with faults on demand.
#![cfg(feature = "client")]

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{examples_dir, EXAMPLES};

use bytes::Bytes;
use futures::{stream, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::{sync::Notify, time::timeout};
use tower_sse::client::{ClientError, ClientEvent, EventSource};

// --- the example processes -------------------------------------------------------------------

/// A running example, killed when dropped.
struct Example {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Example {
    fn start(name: &str, env: &[(&str, String)]) -> Example {
        let mut command = Command::new(examples_dir().join(name));
        command
            .env("PORT", "0")
            .env("GPT_DELAY_MS", "0")
            .env("EVENTS_INTERVAL_MS", "20")
            .env("RUST_LOG", "info")
            .env_remove("UPSTREAM_URL")
            .env_remove("UPSTREAM_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(String::new()));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("{name} exited before listening: {}", log.lock().unwrap());
            }
            log.lock().unwrap().push_str(&line);
            if let Some(at) = line.find("listening on http://") {
                break line[at + "listening on http://".len()..]
                    .trim()
                    .parse()
                    .unwrap();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Example { child, addr, log }
    }

    /// Asks `POST /gpt-stream` with `query`, as the page does.
    fn ask(&self, query: &str) -> tower_sse::client::EventStream {
        let request = Request::post(format!("http://{}/gpt-stream", self.addr))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "query": query }).to_string())
            .unwrap();
        EventSource::new(request).stream()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- GET /events -----------------------------------------------------------------------------

#[tokio::test]
async fn events_resume_after_each_reconnection_with_no_gap_and_no_duplicate() {
    let example = Example::start("gpt_stream_hyper", &[]);
    // `limit=4` ends every response after four events, so the client reconnects again and
    // again with `Last-Event-ID`.
    let url = format!("http://{}/events?limit=4", example.addr);
    let events = EventSource::get(url.parse().unwrap())
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .stream();
    let items: Vec<_> = timeout(Duration::from_secs(30), events.take(40).collect::<Vec<_>>())
        .await
        .expect("forty items within 30 s");
    let mut ticks = Vec::new();
    let mut ids = Vec::new();
    let mut opens = 0;
    for item in items {
        match item.unwrap() {
            ClientEvent::Open { .. } => opens += 1,
            ClientEvent::Message(event) => {
                let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                ticks.push(data["tick"].as_u64().unwrap());
                ids.push(event.last_event_id);
            }
            ClientEvent::Reconnecting { error, .. } => assert!(error.is_none(), "{error:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(opens >= 5, "reconnected {opens} times");
    let first = ticks[0];
    let expected: Vec<u64> = (first..first + ticks.len() as u64).collect();
    assert_eq!(ticks, expected, "every tick once, in order");
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "a new id on every event: {ids:?}"
    );
}

// --- the fake upstream -----------------------------------------------------------------------

/// Pieces in a question to the fake upstream are separated by this character.
const SEP: char = '\u{1f}';

/// What the fake upstream saw, and a signal for when a client left in the middle.
#[derive(Default)]
struct Upstream {
    requests: Mutex<Vec<(Option<String>, serde_json::Value)>>,
    left: Notify,
}

/// Signals `left` when dropped: the upstream's response body went away before its end.
struct LeftGuard(Arc<Upstream>);

impl Drop for LeftGuard {
    fn drop(&mut self) {
        self.0.left.notify_one();
    }
}

/// An OpenAI-compatible `POST /v1/chat/completions` that streams back the question's pieces
/// (split at [`SEP`]). A prefix says what follows them: `fail:` the connection fails, `error:`
/// an error object, `short:` the end without `data: [DONE]`, `hold:` nothing until the client
/// leaves.
async fn fake_upstream() -> (SocketAddr, Arc<Upstream>) {
    let upstream = Arc::new(Upstream::default());
    let state = upstream.clone();
    let addr = common::serve(move |request: Request<Incoming>| {
        let state = state.clone();
        async move { answer(request, state).await }
    })
    .await;
    (addr, upstream)
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

async fn answer(request: Request<Incoming>, state: Arc<Upstream>) -> Response<Body> {
    assert_eq!(request.uri().path(), "/v1/chat/completions");
    let authorization = request
        .headers()
        .get("authorization")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    state
        .requests
        .lock()
        .unwrap()
        .push((authorization, json.clone()));
    let question = json["messages"][0]["content"].as_str().unwrap().to_owned();

    let chunk = |delta: serde_json::Value| {
        let chunk = serde_json::json!({
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": null }],
        });
        Ok::<_, std::io::Error>(Frame::data(Bytes::from(format!("data: {chunk}\n\n"))))
    };
    let (mode, pieces) = match question.split_once(':') {
        Some((mode @ ("fail" | "hold" | "error" | "short"), rest)) => (mode, rest.to_owned()),
        _ => ("answer", question),
    };
    let mut frames = vec![chunk(serde_json::json!({ "role": "assistant" }))];
    frames.extend(
        pieces
            .split(SEP)
            .map(|piece| chunk(serde_json::json!({ "content": piece }))),
    );
    let head = stream::iter(frames);
    let tail = match mode {
        // Mid-stream: after the pieces have gone out.
        "fail" => stream::once(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err(std::io::Error::other("the model crashed"))
        })
        .boxed(),
        // An error object in the stream, as OpenAI sends one.
        "error" => stream::iter([Ok(Frame::data(Bytes::from_static(
            b"data: {\"error\": {\"message\": \"overloaded\"}}\n\n",
        )))])
        .boxed(),
        // A clean end before `data: [DONE]`.
        "short" => stream::empty().boxed(),
        "hold" => {
            let guard = LeftGuard(state.clone());
            stream::pending()
                .map(move |frame| {
                    let _ = &guard;
                    frame
                })
                .boxed()
        }
        _ => stream::iter([
            chunk(serde_json::json!({})),
            Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))),
        ])
        .boxed(),
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed_unsync(StreamBody::new(head.chain(tail))))
        .unwrap()
}

/// An example in gateway mode in front of the fake upstream at `addr`.
fn gateway(name: &str, addr: SocketAddr) -> Example {
    Example::start(
        name,
        &[
            ("UPSTREAM_URL", format!("http://{addr}/v1/")),
            ("UPSTREAM_MODEL", "test-model".into()),
            ("UPSTREAM_API_KEY", "sk-test".into()),
        ],
    )
}

/// The pieces a `/gpt-stream` answer delivered (each event's data is a JSON string), and the
/// error it ended with.
async fn pieces(stream: tower_sse::client::EventStream) -> (Vec<String>, Option<ClientError>) {
    let mut messages = stream.messages();
    let mut pieces = Vec::new();
    let end = timeout(Duration::from_secs(30), async {
        while let Some(message) = messages.next().await {
            match message {
                // The example's final `event: done` marks a complete answer; it is no piece.
                Ok(message) if message.event == "done" => {}
                Ok(message) => pieces.push(serde_json::from_str(&message.data).unwrap()),
                Err(error) => return Some(error),
            }
        }
        None
    })
    .await
    .expect("the answer ended within 30 s");
    (pieces, end)
}

// --- the gateway -----------------------------------------------------------------------------

#[tokio::test]
async fn the_gateway_passes_every_piece_through_exactly() {
    let (addr, upstream) = fake_upstream().await;
    let sent = [
        "Hel",
        "lo",
        " ",
        "  two spaces",
        "你好",
        "世界",
        "😀",
        "👨‍👩‍👧",
        "e\u{301}",
        "\n\n",
        "\t",
        "end\n",
    ];
    let question = sent.join(&SEP.to_string());
    for name in EXAMPLES {
        let example = gateway(name, addr);
        let (got, error) = pieces(example.ask(&question)).await;
        assert!(error.is_none(), "{name}: {error:?}");
        assert_eq!(got, sent, "{name}");
    }
    let requests = upstream.requests.lock().unwrap();
    assert_eq!(
        requests.len(),
        EXAMPLES.len(),
        "one upstream request per question"
    );
    let (authorization, body) = &requests[0];
    assert_eq!(authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(body["messages"][0]["content"], question);
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_request_at_once() {
    for name in EXAMPLES {
        let (addr, upstream) = fake_upstream().await;
        let example = gateway(name, addr);
        let mut messages = example.ask("hold:first").messages();
        let first = timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the first piece");
        assert_eq!(first.unwrap().unwrap().data, "\"first\"");
        drop(messages);
        timeout(Duration::from_secs(3), upstream.left.notified())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{name}: the upstream request was still open 3 s after the client left:\n{}",
                    example.log.lock().unwrap()
                )
            });
    }
}

#[tokio::test]
async fn an_upstream_failing_mid_stream_reaches_the_client_as_an_error() {
    let (addr, upstream) = fake_upstream().await;
    for name in EXAMPLES {
        let example = gateway(name, addr);
        for failure in ["fail", "error", "short"] {
            let (got, error) = pieces(example.ask(&format!("{failure}:a{SEP}b"))).await;
            assert_eq!(got, ["a", "b"], "{name}, {failure}");
            assert!(
                matches!(error, Some(ClientError::Transport(_))),
                "{name}, {failure}: the answer must fail, not end cleanly: {error:?}"
            );
        }
    }
    // No failed request was sent again.
    assert_eq!(upstream.requests.lock().unwrap().len(), 3 * EXAMPLES.len());
}

#[tokio::test]
async fn an_upstream_refusing_the_request_reaches_the_client_as_an_error() {
    // Nothing listens there.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let example = gateway("gpt_stream_hyper", addr);
    let (got, error) = pieces(example.ask("hi")).await;
    assert!(got.is_empty());
    assert!(
        matches!(error, Some(ClientError::Transport(_))),
        "{error:?}"
    );
}
