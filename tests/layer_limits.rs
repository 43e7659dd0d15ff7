//! `SseLayer` limits at their edges, over real sockets: a stream that must end while its inner
//! body stalls mid-event is aborted after the finish timeout; comment lines between events
//! never hold a limit back; CR-only streams get their keep-alives; compressed streams pass
//! untouched; and no `Duration` given to the crate panics.

mod common;
mod layer_support;

use std::time::{Duration, Instant};

use common::{get, read_body, Proto};
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use layer_support::{
    accept, closed_within, read_until, read_until_suffix, recording_hook, scripted, Timed,
};
use tokio_util::sync::CancellationToken;
use tower_sse::{ChannelBuilder, CloseReason, Event, Shutdown, SseLayer, StallGuard};

const SSE: &str = "text/event-stream";

/// Generous slack on top of a limit, for a loaded machine.
const SLACK: Duration = Duration::from_secs(2);

#[tokio::test]
async fn max_duration_aborts_a_stream_stalled_mid_event_after_the_finish_timeout() {
    let max_duration = Duration::from_millis(300);
    let grace = Duration::from_millis(500);
    for proto in [Proto::Http1, Proto::Http2] {
        let (hook, seen) = recording_hook();
        let layer = SseLayer::new()
            .max_duration(max_duration)
            .max_duration_event(Event::new().event("bye").unwrap().data(""))
            .finish_timeout(grace)
            .on_close(hook);
        let (addr, mut accepted) = scripted(layer, SSE).await;
        let started = Instant::now();
        let (_client, response) = get(addr, proto, "/").await;
        let app = accept(&mut accepted).await;
        // Half an event, then the inner body (a proxied upstream, say) stops for good.
        app.send("data: a\n\ndata: par").await;
        let received = read_body(response.into_body()).await;
        let took = started.elapsed();
        assert!(
            received.error.is_some(),
            "{proto:?}: an unfinished event is an abort"
        );
        assert_eq!(received.text(), "data: a\n\ndata: par", "{proto:?}");
        assert!(
            took >= max_duration + grace - Duration::from_millis(50),
            "{proto:?}: {took:?}"
        );
        assert!(took <= max_duration + grace + SLACK, "{proto:?}: {took:?}");
        assert_eq!(
            closed_within(&app.connection, SLACK).await,
            CloseReason::TimedOut
        );
        assert_eq!(seen.lock().unwrap()[0].reason, CloseReason::TimedOut);
        drop(app);
    }
}

#[tokio::test]
async fn shutdown_aborts_a_stream_stalled_mid_event_after_the_finish_timeout() {
    let grace = Duration::from_millis(500);
    for proto in [Proto::Http1, Proto::Http2] {
        let token = CancellationToken::new();
        let layer = SseLayer::new()
            .graceful_shutdown(token.clone())
            .finish_timeout(grace);
        let (addr, mut accepted) = scripted(layer, SSE).await;
        let (_client, response) = get(addr, proto, "/").await;
        let app = accept(&mut accepted).await;
        app.send("data: par").await;
        let mut body = response.into_body();
        read_until_suffix(&mut body, &mut Timed::default(), b"data: par").await;
        let signalled = Instant::now();
        token.cancel();
        let received = read_body(body).await;
        let took = signalled.elapsed();
        assert!(received.error.is_some(), "{proto:?}");
        assert!(took <= grace + SLACK, "{proto:?}: {took:?}");
        assert_eq!(
            closed_within(&app.connection, SLACK).await,
            CloseReason::Shutdown
        );
        drop(app);
    }
}

#[tokio::test]
async fn the_event_in_flight_still_completes_within_the_finish_timeout() {
    let token = CancellationToken::new();
    let layer = SseLayer::new()
        .graceful_shutdown(token.clone())
        .shutdown_event(Event::new().event("bye").unwrap().data(""))
        .finish_timeout(Duration::from_secs(5));
    let (addr, mut accepted) = scripted(layer, SSE).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    let app = accept(&mut accepted).await;
    app.send("data: par").await;
    let mut body = response.into_body();
    let mut timed = Timed::default();
    read_until_suffix(&mut body, &mut timed, b"data: par").await;
    token.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.send("tial\n\n").await;
    let rest = read_body(body).await;
    assert!(rest.error.is_none());
    assert_eq!(rest.text(), "tial\n\nevent: bye\ndata: \n\n");
}

#[tokio::test]
async fn comment_lines_between_events_hold_back_no_limit() {
    // Keep-alives: after the app's own heartbeat comment, the layer still writes its own.
    let (addr, mut accepted) =
        scripted(SseLayer::new().keep_alive(Duration::from_millis(150)), SSE).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    let app = accept(&mut accepted).await;
    app.send("data: a\n\n: hb\n").await;
    let mut body = response.into_body();
    let mut timed = Timed::default();
    read_until_suffix(&mut body, &mut timed, b"data: a\n\n: hb\n:\n").await;

    // The time limit and shutdown: a stream whose last bytes are a nested layer's keep-alive
    // ends at once, with its final event.
    let token = CancellationToken::new();
    let layer = SseLayer::new()
        .without_keep_alive()
        .max_duration(Duration::from_millis(300))
        .max_duration_event(Event::new().event("bye").unwrap().data(""))
        .graceful_shutdown(token.clone())
        .shutdown_event(Event::new().event("down").unwrap().data(""));
    let (addr, mut accepted) = scripted(layer, SSE).await;
    let (_c1, timed_out) = get(addr, Proto::Http2, "/").await;
    let timed_out_app = accept(&mut accepted).await;
    timed_out_app.send(":\n").await;
    let started = Instant::now();
    let received = read_body(timed_out.into_body()).await;
    assert!(received.error.is_none());
    assert_eq!(received.text(), ":\nevent: bye\ndata: \n\n");
    assert!(started.elapsed() < Duration::from_millis(300) + SLACK);

    let (_c2, shut) = get(addr, Proto::Http1, "/").await;
    let shut_app = accept(&mut accepted).await;
    shut_app.send("data: x\n\n: nested\r\n").await;
    let mut body = shut.into_body();
    let mut timed = Timed::default();
    read_until_suffix(&mut body, &mut timed, b": nested\r\n").await;
    token.cancel();
    let rest = read_body(body).await;
    assert!(rest.error.is_none());
    assert_eq!(rest.text(), "event: down\ndata: \n\n");
    assert_eq!(
        closed_within(&shut_app.connection, SLACK).await,
        CloseReason::Shutdown
    );
}

#[tokio::test]
async fn cr_only_streams_get_keep_alives_and_keep_their_events() {
    let interval = Duration::from_millis(150);
    for proto in [Proto::Http1, Proto::Http2] {
        let (addr, mut accepted) = scripted(SseLayer::new().keep_alive(interval), SSE).await;
        let (_client, response) = get(addr, proto, "/").await;
        let app = accept(&mut accepted).await;
        // An event ended by CR CR: the byte after it could be the LF of a CRLF, but on a
        // CR-only stream it never comes.
        app.send("data: a\r\r").await;
        let mut body = response.into_body();
        let mut timed = Timed::default();
        read_until_suffix(&mut body, &mut timed, b"data: a\r\r:\n").await;
        // The LF of a CRLF split after our keep-alive is dropped, since the line had ended.
        app.send("\ndata: b\r\n\r\n").await;
        drop(app);
        let deadline = Instant::now() + SLACK;
        assert!(
            read_until(&mut body, &mut timed, deadline).await,
            "{proto:?}"
        );
        let bytes = timed.bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("data: a\r\r:\n"), "{proto:?}: {text:?}");
        assert!(text.ends_with("data: b\r\n\r\n"), "{proto:?}: {text:?}");
        let mut parser = tower_sse::Parser::new();
        parser.feed(&bytes).unwrap();
        let events: Vec<_> = std::iter::from_fn(|| parser.next_event())
            .map(|e| e.data)
            .collect();
        assert_eq!(events, ["a", "b"], "{proto:?}: {text:?}");
        assert!(
            !text.contains("\n\n:\n\n"),
            "{proto:?}: an empty message slipped in"
        );
    }
}

#[tokio::test]
async fn a_compressed_event_stream_passes_untouched() {
    let (hook, seen) = recording_hook();
    let layer = SseLayer::new()
        .keep_alive(Duration::from_millis(100))
        .max_duration(Duration::from_millis(200))
        .on_close(hook);
    let app = tower::service_fn(|_request: http::Request<hyper::body::Incoming>| async {
        let (emitter, body) = tower_sse::channel(4);
        tokio::spawn(async move {
            // Stands in for gzip bytes: no event boundary to find in there.
            let _ = emitter.send(Event::new().data("compressed")).await;
            tokio::time::sleep(Duration::from_millis(600)).await;
            emitter.complete();
        });
        let mut response = tower_sse::response(body);
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
        Ok::<_, std::convert::Infallible>(response)
    });
    let addr = layer_support::serve_service(tower::Layer::layer(&layer, app)).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
    assert_eq!(response.headers()[CONTENT_TYPE], SSE);
    let received = read_body(response.into_body()).await;
    assert!(received.error.is_none());
    // No keep-alive inside, and no time limit cutting it at 200 ms.
    assert_eq!(received.text(), "data: compressed\n\n");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].reason, CloseReason::Completed);
    assert!(!seen[0].streaming);
}

#[tokio::test]
async fn no_duration_panics() {
    for duration in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX] {
        let layer = SseLayer::new()
            .keep_alive(duration)
            .max_duration(duration)
            .finish_timeout(duration);
        let guard = StallGuard::new().write_timeout(duration);
        let _shutdown = Shutdown::new(&guard).grace(duration);
        let (addr, mut accepted) = scripted(layer, SSE).await;
        let (_client, response) = get(addr, Proto::Http1, "/").await;
        let app = accept(&mut accepted).await;
        // With a 1 ns limit the stream may be over before anything is fed: only look.
        let mut body = response.into_body();
        let mut timed = Timed::default();
        read_until(
            &mut body,
            &mut timed,
            Instant::now() + Duration::from_millis(200),
        )
        .await;
        let (emitter, channel_body) = ChannelBuilder::new(2).timeout(duration).build();
        let _ = emitter.try_send("x");
        let _ = emitter.send_timeout("y", duration).await;
        drop((emitter, channel_body, app));
    }
}
