//! What an idle or quiet stream costs and when its keep-alives come: a lone broadcast event
//! goes out as the very bytes the hub encoded (no frame buffer, no copy), and keep-alives are
//! never late under tokio's paused clock, as users' own tests run them.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header::CONTENT_TYPE, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};
use tower_sse::{Event, Hub, SseBody, SseLayer};

/// An event-stream body that never yields: an idle stream.
struct Idle;

impl http_body::Body for Idle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn keep_alives_are_never_late_under_a_paused_clock() {
    for interval in [
        Duration::from_secs(15),
        Duration::from_millis(1500),
        Duration::from_millis(7),
    ] {
        let mut service = SseLayer::new()
            .keep_alive(interval)
            .layer(tower::service_fn(|_request: Request<()>| async {
                let response = Response::builder()
                    .header(CONTENT_TYPE, "text/event-stream")
                    .body(Idle)
                    .unwrap();
                Ok::<_, Infallible>(response)
            }));
        let response = service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        let mut body = Box::pin(response.into_body());
        for i in 0..5 {
            // A test that advances the clock by exactly one interval sees the keep-alive.
            let frame = tokio::time::timeout(interval, body.frame())
                .await
                .unwrap_or_else(|_| panic!("keep-alive {i} every {interval:?} came late"))
                .unwrap()
                .unwrap();
            assert_eq!(frame.into_data().unwrap(), ":\n");
        }
    }
}

#[tokio::test]
async fn a_lone_broadcast_event_goes_out_as_the_bytes_the_hub_encoded() {
    let hub = Hub::new();
    let topic = hub.topic("ticks");
    let mut first = Box::pin(SseBody::new(topic.subscribe()));
    let mut second = Box::pin(SseBody::new(topic.subscribe()));
    topic
        .publish(Event::new().data("16 bytes of data"))
        .await
        .unwrap();
    let a = first.frame().await.unwrap().unwrap().into_data().unwrap();
    let b = second.frame().await.unwrap().unwrap().into_data().unwrap();
    // The id is the log's epoch and the event's number.
    assert!(a.starts_with(b"data: 16 bytes of data\nid: "), "{a:?}");
    assert!(a.ends_with(b"-1\n\n"), "{a:?}");
    // Both subscribers hand over the same shared allocation: nothing was copied for either.
    assert_eq!(a.as_ptr(), b.as_ptr());
}
