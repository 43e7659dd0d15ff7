//! What an idle or quiet stream costs and when its keep-alives come: a lone broadcast event
//! goes out as the very bytes the hub encoded (no frame buffer, no copy), and keep-alives are
//! never late under tokio's paused clock, as users' own tests run them, whether one stream or
//! hundreds share the layer's clock, and whichever task or runtime polls them.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::FutureExt;
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
        let mut body = open(&mut idle_service(interval)).await;
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

/// A layer with keep-alives every `interval` around an idle event stream.
fn idle_service(
    interval: Duration,
) -> impl Service<
    Request<()>,
    Response = Response<tower_sse::layer::ResponseBody<Idle>>,
    Error = Infallible,
    Future: Send,
> + Clone {
    SseLayer::new()
        .keep_alive(interval)
        .layer(tower::service_fn(|_request: Request<()>| async {
            let response = Response::builder()
                .header(CONTENT_TYPE, "text/event-stream")
                .body(Idle)
                .unwrap();
            Ok::<_, Infallible>(response)
        }))
}

/// Opens one idle stream on `service`.
async fn open<S>(service: &mut S) -> Pin<Box<tower_sse::layer::ResponseBody<Idle>>>
where
    S: Service<Request<()>, Response = Response<tower_sse::layer::ResponseBody<Idle>>>,
    S::Error: std::fmt::Debug,
{
    let response = service.ready().await.unwrap().call(Request::new(())).await;
    Box::pin(response.unwrap().into_body())
}

/// Polls an idle stream once with `waker`, as a task with that waker would: it waits.
fn wait_once(body: &mut Pin<Box<tower_sse::layer::ResponseBody<Idle>>>, waker: &std::task::Waker) {
    let polled = body
        .as_mut()
        .frame()
        .poll_unpin(&mut Context::from_waker(waker));
    assert!(polled.is_pending());
}

/// Reads `count` keep-alives from `body` in a task of its own, which only runs again when
/// something wakes it: a test that awaits the task sees whether the clock woke it (a timeout
/// that polled the body itself would find the keep-alive due without any wake-up).
fn read_keep_alives(
    mut body: Pin<Box<tower_sse::layer::ResponseBody<Idle>>>,
    count: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..count {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), ":\n");
        }
    })
}

#[tokio::test(start_paused = true)]
async fn hundreds_of_streams_share_one_clock_that_stops_when_they_go() {
    let interval = Duration::from_secs(15);
    let mut service = idle_service(interval);
    let mut readers = Vec::new();
    for _ in 0..300 {
        readers.push(read_keep_alives(open(&mut service).await, 3));
        // Opened over more than one interval: the deadlines spread over the whole grid.
        tokio::time::sleep(Duration::from_millis(77)).await;
    }
    let metrics = tokio::runtime::Handle::current().metrics();
    assert_eq!(
        metrics.num_alive_tasks(),
        301,
        "300 readers and the one task of the clock"
    );
    for (i, reader) in readers.into_iter().enumerate() {
        tokio::time::timeout(interval * 4, reader)
            .await
            .unwrap_or_else(|_| panic!("stream {i} was not woken for its keep-alives"))
            .unwrap();
    }
    tokio::time::sleep(interval * 2).await;
    assert_eq!(
        metrics.num_alive_tasks(),
        0,
        "nothing waits: the clock stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_polled_from_another_task_gets_its_keep_alive_there() {
    let interval = Duration::from_secs(1);
    let mut body = open(&mut idle_service(interval)).await;
    // First polled with a waker nobody listens to, then by a task: the wake-up must move.
    wait_once(&mut body, &futures::task::noop_waker());
    tokio::time::timeout(interval * 3, read_keep_alives(body, 1))
        .await
        .expect("the keep-alive wakes the task that polls now")
        .unwrap();
}

/// A waker that only counts its clones, through its `Arc`.
struct Counted;

impl std::task::Wake for Counted {
    fn wake(self: std::sync::Arc<Self>) {}
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_goes_leaves_nothing_of_its_task_in_the_clock() {
    let mut service = idle_service(Duration::from_secs(15));
    let first = std::sync::Arc::new(Counted);
    let second = std::sync::Arc::new(Counted);
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let mut body = open(&mut service).await;
        wait_once(&mut body, &std::task::Waker::from(first.clone()));
        bodies.push(body);
    }
    // Each body keeps the waker it waits with, and the clock the one it will wake.
    assert_eq!(std::sync::Arc::strong_count(&first), 21);
    // Polled by another task: the clock lets go of the old waker.
    for body in &mut bodies {
        wait_once(body, &std::task::Waker::from(second.clone()));
    }
    assert_eq!(std::sync::Arc::strong_count(&first), 1);
    assert_eq!(std::sync::Arc::strong_count(&second), 21);
    // Gone long before their keep-alive: nothing keeps their task.
    drop(bodies);
    assert_eq!(std::sync::Arc::strong_count(&second), 1);
}

#[test]
fn a_layer_keeps_its_keep_alives_after_the_runtime_it_ticked_on_is_gone() {
    let interval = Duration::from_secs(1);
    let service = idle_service(interval);
    let paused_runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let first = paused_runtime();
    first.block_on(async {
        let mut body = open(&mut service.clone()).await;
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), ":\n");
        // Waiting for the next one when the runtime goes.
        wait_once(&mut body, &futures::task::noop_waker());
    });
    drop(first);
    paused_runtime().block_on(async {
        let body = open(&mut service.clone()).await;
        tokio::time::timeout(interval * 3, read_keep_alives(body, 2))
            .await
            .expect("a new runtime's streams get their keep-alives")
            .unwrap();
    });
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
