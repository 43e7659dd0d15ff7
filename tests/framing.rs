//! Every framing on the one channel and body, over real loopback sockets: the bytes on the
//! wire, the headers, serde values in, error records, and that nothing is ever written after
//! the terminal record, however sends and completion race.

mod common;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use common::{get, read_body, serve, Proto};
use futures::{stream, StreamExt};
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tower_sse::{
    framed_channel, framed_response,
    framing::{Framing, JsonLines, JsonSeq, Ndjson, Text},
    ChannelBuilder, CloseReason, Emitter, FramedBody, SendErrorKind, TrySendError,
};

#[derive(Serialize)]
struct Chunk<'a> {
    content: &'a str,
    done: bool,
}

/// Serves one channel per request in the framing `F` and hands each emitter to the test.
async fn serve_framed<F>(
    builder: ChannelBuilder<F>,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Emitter<F>>)
where
    F: Framing + tower_sse::framing::Encode<<F as Framing>::Item>,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = serve(move |_request| {
        let (emitter, body) = builder.clone().build();
        tx.send(emitter).unwrap();
        async move { framed_response(body) }
    })
    .await;
    (addr, rx)
}

async fn three_chunks<F>(emitter: &Emitter<F>)
where
    F: Framing + for<'a> tower_sse::framing::Encode<Chunk<'a>>,
{
    for content in [" Hel", "lo\n", "世界 👋"] {
        emitter
            .send(Chunk {
                content,
                done: false,
            })
            .await
            .unwrap_or_else(|_| panic!("send"));
    }
}

const THREE_LINES: &str = "{\"content\":\" Hel\",\"done\":false}\n\
                           {\"content\":\"lo\\n\",\"done\":false}\n\
                           {\"content\":\"世界 👋\",\"done\":false}\n";

#[tokio::test]
async fn json_framings_write_one_value_per_line_with_their_content_type() {
    for proto in [Proto::Http1, Proto::Http2] {
        let (addr, mut emitters) = serve_framed(ChannelBuilder::framed(Ndjson, 4)).await;
        let (_client, response) = get(addr, proto, "/").await;
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let emitter = emitters.recv().await.unwrap();
        three_chunks(&emitter).await;
        emitter.complete();
        let received = read_body(response.into_body()).await;
        assert!(received.error.is_none(), "{proto:?}: {:?}", received.error);
        assert_eq!(received.text(), THREE_LINES, "{proto:?}");
        assert_eq!(emitter.closed().await, CloseReason::Completed);
    }

    let (addr, mut emitters) = serve_framed(ChannelBuilder::framed(JsonLines, 4)).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    assert_eq!(response.headers()["content-type"], "application/jsonl");
    let emitter = emitters.recv().await.unwrap();
    three_chunks(&emitter).await;
    drop(emitter); // the last clone gone: a clean end
    assert_eq!(read_body(response.into_body()).await.text(), THREE_LINES);

    let (addr, mut emitters) = serve_framed(ChannelBuilder::framed(JsonSeq, 4)).await;
    let (_client, response) = get(addr, Proto::Http2, "/").await;
    assert_eq!(response.headers()["content-type"], "application/json-seq");
    let emitter = emitters.recv().await.unwrap();
    three_chunks(&emitter).await;
    drop(emitter);
    let expected: String = THREE_LINES
        .lines()
        .map(|line| format!("\u{1e}{line}\n"))
        .collect();
    assert_eq!(read_body(response.into_body()).await.text(), expected);
}

#[tokio::test]
async fn text_is_written_as_it_is_sent() {
    let (addr, mut emitters) = serve_framed(ChannelBuilder::framed(Text, 4)).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let emitter = emitters.recv().await.unwrap();
    let big = "x".repeat(100_000);
    for piece in [" lead", "ing\r\n", "", "日本", big.as_str(), "\n"] {
        emitter.send(piece).await.unwrap();
    }
    emitter.send(String::from("end")).await.unwrap();
    emitter.complete();
    let received = read_body(response.into_body()).await;
    assert!(received.error.is_none());
    assert_eq!(received.text(), format!(" leading\r\n日本{big}\nend"));
}

#[tokio::test]
async fn a_value_serde_refuses_comes_back_and_the_stream_goes_on() {
    let (emitter, mut body) = framed_channel(Ndjson, 1);
    let mut bad = std::collections::BTreeMap::new();
    bad.insert((1, 2), "tuple keys are no JSON object keys");
    for _ in 0..3 {
        let err = emitter.send(bad.clone()).await.unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::Invalid);
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(err.into_item(), bad);
        let err = emitter
            .send_timeout(&bad, std::time::Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::Invalid);
    }
    match emitter.try_send(&bad) {
        Err(TrySendError::Invalid(back, _)) => assert_eq!(back, &bad),
        other => panic!("{other:?}"),
    }
    // The one slot is still free: refused values took none.
    emitter.try_send(serde_json::json!({"ok": true})).unwrap();
    emitter.complete();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&frame[..], b"{\"ok\":true}\n");
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn failed_sends_hand_back_the_value_and_say_why() {
    let (emitter, body) = framed_channel(JsonLines, 1);
    emitter.send(1).await.unwrap();
    match emitter.try_send(vec!["full"]) {
        Err(TrySendError::Full(value)) => assert_eq!(value, vec!["full"]),
        other => panic!("{other:?}"),
    }
    drop(body);
    let err = emitter.send("late").await.unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Closed(CloseReason::Disconnected));
    assert_eq!(err.into_item(), "late");
    let (text, body) = framed_channel(Text, 1);
    drop(body);
    let err = text.send(String::from("kept")).await.unwrap_err();
    assert_eq!(err.into_item(), "kept");
}

#[tokio::test]
async fn complete_with_error_writes_the_error_record_when_asked() {
    for proto in [Proto::Http1, Proto::Http2] {
        let builder = ChannelBuilder::framed(Ndjson, 4).error_event(true);
        let (addr, mut emitters) = serve_framed(builder).await;
        let (_client, response) = get(addr, proto, "/").await;
        let emitter = emitters.recv().await.unwrap();
        emitter.send(serde_json::json!({"n": 1})).await.unwrap();
        emitter.complete_with_error("model \"x\" failed\nbadly");
        let err = emitter.send(2).await.unwrap_err();
        assert_eq!(err.kind(), SendErrorKind::Closed(CloseReason::Error));
        let received = read_body(response.into_body()).await;
        assert!(
            received.error.is_none(),
            "{proto:?}: a clean end after the record"
        );
        assert_eq!(
            received.text(),
            "{\"n\":1}\n{\"error\":\"model \\\"x\\\" failed\\nbadly\"}\n"
        );
        let last: serde_json::Value =
            serde_json::from_str(received.text().lines().last().unwrap()).unwrap();
        assert_eq!(last["error"], "model \"x\" failed\nbadly");
        assert_eq!(emitter.closed().await, CloseReason::Error);
    }

    let builder = ChannelBuilder::framed(JsonSeq, 4).error_event(true);
    let (addr, mut emitters) = serve_framed(builder).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    emitters.recv().await.unwrap().complete_with_error("x");
    assert_eq!(
        read_body(response.into_body()).await.text(),
        "\u{1e}{\"error\":\"x\"}\n"
    );
}

#[tokio::test]
async fn without_an_error_record_the_response_aborts() {
    // Text has no error record, so it aborts even when asked for one.
    for builder in [
        ChannelBuilder::framed(Text, 4),
        ChannelBuilder::framed(Text, 4).error_event(true),
    ] {
        let (addr, mut emitters) = serve_framed(builder).await;
        let (_client, response) = get(addr, Proto::Http1, "/").await;
        let emitter = emitters.recv().await.unwrap();
        emitter.send("partial").await.unwrap();
        emitter.complete_with_error("failed");
        let received = read_body(response.into_body()).await;
        assert!(received.error.is_some(), "the client saw a clean end");
        assert_eq!(received.text(), "partial");
    }
    let (addr, mut emitters) = serve_framed(ChannelBuilder::framed(Ndjson, 4)).await;
    let (_client, response) = get(addr, Proto::Http2, "/").await;
    let emitter = emitters.recv().await.unwrap();
    emitter.send(1).await.unwrap();
    emitter.complete_with_error("failed");
    let received = read_body(response.into_body()).await;
    assert!(received.error.is_some(), "the client saw a clean end");
    assert_eq!(received.text(), "1\n");
}

#[tokio::test]
async fn a_body_over_a_stream_of_values_encodes_each_and_aborts_on_a_bad_one() {
    let values = stream::iter((0..1000).map(|n| Ok::<_, Infallible>(serde_json::json!({"n": n}))));
    let mut body = FramedBody::<Ndjson, _>::new(values);
    let mut bytes = Vec::new();
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        bytes.extend_from_slice(&frame.unwrap().into_data().unwrap());
        frames += 1;
    }
    let expected: String = (0..1000).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    assert_eq!(frames, 1, "ready values are coalesced");

    let mut bad = std::collections::BTreeMap::new();
    bad.insert((0, 0), 0);
    let values = stream::iter([Ok::<_, Infallible>(None), Ok(Some(bad)), Ok(None)]);
    let mut body = FramedBody::<JsonSeq, _>::new(values);
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"\x1enull\n");
    assert!(body.frame().await.unwrap().is_err());
    assert!(body.frame().await.is_none());

    let pieces = stream::iter(["a", "b"].map(Ok::<_, Infallible>)).boxed();
    let response = framed_response(FramedBody::<Text, _>::new(pieces));
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let bytes: Bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"ab");
}

/// Many rounds of senders racing `complete_with_error` (and `complete`): every item accepted is
/// written, the terminal record comes exactly once and last, and nothing follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_ever_written_after_the_terminal_record() {
    const ROUNDS: usize = 5_000;
    for round in 0..ROUNDS {
        let with_error = round % 4 != 0;
        let builder = ChannelBuilder::framed(Ndjson, 2).error_event(true);
        let (emitter, body) = builder.build();
        let accepted = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..2)
            .map(|sender| {
                let emitter = emitter.clone();
                let accepted = Arc::clone(&accepted);
                tokio::spawn(async move {
                    for i in 0.. {
                        match emitter.send(serde_json::json!([sender, i])).await {
                            Ok(()) => accepted.fetch_add(1, Ordering::SeqCst),
                            Err(err) => {
                                assert!(matches!(err.kind(), SendErrorKind::Closed(_)));
                                return;
                            }
                        };
                    }
                })
            })
            .collect();
        let finisher = tokio::spawn(async move {
            tokio::task::yield_now().await;
            if with_error {
                emitter.complete_with_error("stop");
            } else {
                emitter.complete();
            }
        });
        let bytes = body.collect().await.unwrap().to_bytes();
        finisher.await.unwrap();
        for sender in senders {
            sender.await.unwrap();
        }
        let text = std::str::from_utf8(&bytes).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "round {round}: {text:?}"
        );
        if with_error {
            assert_eq!(
                lines.pop(),
                Some("{\"error\":\"stop\"}"),
                "round {round}: the record is last"
            );
        }
        assert!(
            lines.iter().all(|line| line.starts_with('[')),
            "round {round}: {text:?}"
        );
        assert_eq!(
            lines.len(),
            accepted.load(Ordering::SeqCst),
            "round {round}: an accepted item was lost or an extra one written"
        );
    }
}
