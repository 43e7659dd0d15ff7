//! `SseBody` frame by frame: coalescing, latency, large events, errors and the end of stream.

mod common;

use std::{
    cell::Cell,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use common::{read_body, Proto};

use bytes::Bytes;
use futures::{stream, Stream, StreamExt};
use http_body::Body;
use http_body_util::BodyExt;
use tower_sse::{BoxError, Event, SseBody};

type Frames = Vec<Bytes>;

/// Polls the body to its end: its data frames, and the error if it ended with one.
async fn drain<B>(body: B) -> (Frames, Option<BoxError>)
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let mut body = body;
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => frames.push(frame.into_data().unwrap()),
            Err(err) => return (frames, Some(err)),
        }
    }
    (frames, None)
}

fn ready_events(n: usize) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::iter((0..n).map(|i| Ok(Event::from(format!("event {i}")))))
}

fn expected_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("data: event {i}\n\n").into_bytes())
        .collect()
}

#[tokio::test]
async fn ready_events_are_coalesced_into_few_frames() {
    let (frames, error) = drain(SseBody::new(ready_events(10_000))).await;
    assert!(error.is_none());
    assert_eq!(frames.concat(), expected_bytes(10_000));
    // About 180 KB in frames of at most 64 KiB (plus the event that crosses the line).
    assert!(frames.len() <= 4, "{} frames", frames.len());
    assert!(frames.iter().all(|f| f.len() < 64 * 1024 + 64));
}

#[tokio::test]
async fn the_frame_cap_is_configurable_and_never_splits_an_event() {
    let body = SseBody::new(ready_events(1_000)).max_frame_bytes(100);
    let (frames, _) = drain(body).await;
    assert_eq!(frames.concat(), expected_bytes(1_000));
    for frame in &frames {
        assert!(frame.len() < 100 + 20, "frame of {} bytes", frame.len());
        assert!(frame.ends_with(b"\n\n"));
    }
    assert!(frames.len() > 100);
}

#[tokio::test]
async fn a_pending_stream_hands_over_what_is_ready_at_once() {
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Event, Infallible>>();
    let mut body = SseBody::new(rx);
    tx.unbounded_send(Ok(Event::from("first"))).unwrap();
    tx.unbounded_send(Ok(Event::from("second"))).unwrap();
    // Two events ready, then the stream is pending: one frame with both, without waiting.
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&frame[..], b"data: first\n\ndata: second\n\n");
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
    assert!(!body.is_end_stream());
    tx.unbounded_send(Ok(Event::from("third"))).unwrap();
    drop(tx);
    let (frames, error) = drain(body).await;
    assert!(error.is_none());
    assert_eq!(frames.concat(), b"data: third\n\n");
}

#[tokio::test]
async fn a_large_event_goes_out_as_its_own_frame() {
    let large = "z".repeat(64 * 1024);
    let events = stream::iter([
        Ok::<_, Infallible>(Event::from("small")),
        Ok(Event::from(large.as_str())),
        Ok(Event::from("after")),
    ]);
    let (frames, _) = drain(SseBody::new(events)).await;
    assert_eq!(frames.len(), 3);
    assert_eq!(&frames[0][..], b"data: small\n\n");
    assert_eq!(frames[1].len(), "data: \n\n".len() + large.len());
    assert_eq!(&frames[2][..], b"data: after\n\n");
}

#[tokio::test]
async fn an_error_comes_after_the_events_before_it() {
    let events = stream::iter([
        Ok(Event::from("one")),
        Ok(Event::from("two")),
        Err(std::io::Error::other("producer failed")),
        Ok(Event::from("never")),
    ]);
    let (frames, error) = drain(SseBody::new(events)).await;
    assert_eq!(frames.concat(), b"data: one\n\ndata: two\n\n");
    assert_eq!(error.unwrap().to_string(), "producer failed");
}

/// Each event alone, with the stream pending (and ready again at once) between them, then an
/// error right after the last: the body hands the events over one poll apart, and the server
/// polls it again before it has written them.
fn events_then_an_error_right_behind() -> impl Stream<Item = Result<Event, std::io::Error>> {
    let mut step = 0;
    stream::poll_fn(move |cx: &mut Context<'_>| {
        step += 1;
        match step {
            1 => Poll::Ready(Some(Ok(Event::from("one")))),
            3 => Poll::Ready(Some(Ok(Event::from("two")))),
            5 => Poll::Ready(Some(Err(std::io::Error::other("producer failed")))),
            _ if step < 5 => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            _ => Poll::Ready(None),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_right_after_events_reaches_the_client_after_all_of_them() {
    let addr = common::serve(|_| async {
        tower_sse::response(SseBody::new(events_then_an_error_right_behind()))
    })
    .await;
    // HTTP/1.1 only: over HTTP/2 the connection's own task writes, which one poll of the body
    // does not wait for; `SseLayer` holds the error back for it (tests/layer_close.rs).
    for _ in 0..20 {
        let (_client, response) = common::get(addr, Proto::Http1, "/").await;
        let received = read_body(response.into_body()).await;
        assert_eq!(received.text(), "data: one\n\ndata: two\n\n");
        assert!(received.error.is_some(), "the response must abort");
    }
}

#[tokio::test]
async fn the_end_is_reported_exactly() {
    let mut body = SseBody::new(ready_events(3));
    assert!(!body.is_end_stream());
    assert_eq!(body.size_hint().exact(), None);
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap().len(), expected_bytes(3).len());
    // Nothing is left, but the body says it is over only once it handed over its end, so that
    // the layers around it (TraceLayer's `on_eos`) see that end too.
    assert!(!body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn an_empty_stream_is_an_empty_body() {
    let (frames, error) = drain(SseBody::new(ready_events(0))).await;
    assert!(frames.is_empty() && error.is_none());
}

#[test]
fn a_stream_that_is_send_but_not_sync_makes_a_send_body() {
    fn assert_send_body<B: Body<Data = Bytes, Error = BoxError> + Send>(_: &B) {}
    let not_sync = Cell::new(0u8);
    let events = stream::iter(0..3).map(move |i| {
        not_sync.set(i);
        Ok::<_, Infallible>(Event::from("x"))
    });
    assert_send_body(&SseBody::new(events));
}

#[test]
fn response_sets_the_event_stream_headers() {
    let response = tower_sse::response(SseBody::new(ready_events(1)));
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
}
