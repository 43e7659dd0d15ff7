//! `SseLayer` keep-alives over real sockets: exact bytes, idle-reset timing, and never inside
//! an event however the inner body cuts its frames.

mod common;
mod layer_support;

use std::time::{Duration, Instant};

use common::{get, Client, Proto};
use http_body_util::BodyExt;
use layer_support::{accept, read_until, read_until_suffix, scripted, Timed};
use proptest::prelude::*;
use tower_sse::{Event, SseLayer};

const SSE: &str = "text/event-stream";

/// Time since `start`, for messages.
fn since(start: Instant, at: Instant) -> Duration {
    at.saturating_duration_since(start)
}

#[tokio::test]
async fn silence_gives_lone_comment_lines_one_interval_apart() {
    let interval = Duration::from_millis(150);
    for proto in [Proto::Http1, Proto::Http2] {
        let (addr, mut accepted) = scripted(SseLayer::new().keep_alive(interval), SSE).await;
        let (_client, response) = get(addr, proto, "/").await;
        let opened = Instant::now();
        let _app = accept(&mut accepted).await;
        let mut body = response.into_body();
        let mut timed = Timed::default();
        read_until(&mut body, &mut timed, opened + Duration::from_millis(700)).await;

        assert!(
            timed.frames.iter().all(|(_, bytes)| &bytes[..] == b":\n"),
            "{proto:?}: {timed:?}"
        );
        let times: Vec<_> = timed.frames.iter().map(|(at, _)| *at).collect();
        assert!((3..=5).contains(&times.len()), "{proto:?}: {timed:?}");
        let first = since(opened, times[0]);
        assert!(
            first >= Duration::from_millis(120) && first < Duration::from_millis(450),
            "{proto:?}: first keep-alive after {first:?}"
        );
        for pair in times.windows(2) {
            let gap = since(pair[0], pair[1]);
            assert!(
                gap >= Duration::from_millis(120) && gap < Duration::from_millis(450),
                "{proto:?}: keep-alives {gap:?} apart"
            );
        }
    }
}

#[tokio::test]
async fn a_round_of_keep_alives_due_at_once_reaches_every_stream() {
    // Many more streams than the layer's clock wakes in one batch, opened within a few
    // hundredths of the interval, so that their keep-alives fall due together.
    let interval = Duration::from_secs(1);
    let (addr, mut accepted) = scripted(SseLayer::new().keep_alive(interval), SSE).await;
    let (mut clients, mut bodies, mut apps) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..4 {
        let mut client = Client::connect(addr, Proto::Http2).await;
        for _ in 0..150 {
            bodies.push(client.get("/").await.into_body());
            apps.push(accept(&mut accepted).await);
        }
        clients.push(client);
    }
    let opened = Instant::now();
    let firsts = futures::future::join_all(bodies.into_iter().map(|mut body| async move {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
        frame
            .ok()
            .flatten()
            .and_then(Result::ok)
            .and_then(|frame| frame.into_data().ok())
    }))
    .await;
    let missing = firsts
        .iter()
        .filter(|first| first.as_deref() != Some(&b":\n"[..]))
        .count();
    assert_eq!(missing, 0, "{missing} of 600 streams got no keep-alive");
    assert!(
        opened.elapsed() < Duration::from_secs(3),
        "{:?}",
        opened.elapsed()
    );
}

#[tokio::test]
async fn keep_alives_wait_for_silence_and_never_burst() {
    let (addr, mut accepted) =
        scripted(SseLayer::new().keep_alive(Duration::from_millis(200)), SSE).await;
    let (_client, response) = get(addr, Proto::Http1, "/").await;
    let app = accept(&mut accepted).await;
    let mut body = response.into_body();
    let mut timed = Timed::default();

    // Busy for 1 s, an event every 50 ms: the stream is never silent for a whole interval.
    let mut expected = Vec::new();
    for i in 0..20 {
        let event = format!("data: {i}\n\n");
        expected.extend_from_slice(event.as_bytes());
        app.send(event).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    read_until_suffix(&mut body, &mut timed, b"data: 19\n\n").await;
    assert_eq!(
        timed.bytes(),
        expected,
        "a keep-alive went into a busy stream"
    );
    let last_event = timed.frames.last().unwrap().0;

    // Then silence: one keep-alive per interval, counted from the last event.
    timed.frames.clear();
    read_until(
        &mut body,
        &mut timed,
        last_event + Duration::from_millis(700),
    )
    .await;
    assert!(timed.bytes().starts_with(b":\n"), "{timed:?}");
    let first = since(last_event, timed.frames[0].0);
    assert!(
        first >= Duration::from_millis(100) && first < Duration::from_millis(500),
        "first keep-alive {first:?} after the last event"
    );
    let keep_alives = timed.bytes().len() / 2;
    assert!(
        (2..=4).contains(&keep_alives),
        "a burst or a stall: {timed:?}"
    );
    assert_eq!(timed.bytes(), b":\n".repeat(keep_alives));
}

#[tokio::test]
async fn comment_text_event_and_open_comment() {
    let interval = Duration::from_millis(100);
    let cases = [
        (SseLayer::new().keep_alive(interval), &b""[..], &b":\n"[..]),
        (
            SseLayer::new()
                .keep_alive(interval)
                .keep_alive_comment("ping"),
            b"",
            b": ping\n",
        ),
        (
            SseLayer::new()
                .keep_alive(interval)
                .keep_alive_event(Event::new().event("ping").unwrap().data("")),
            b"",
            b"event: ping\ndata: \n\n",
        ),
        (
            SseLayer::new()
                .keep_alive(interval)
                .open_comment("hello proxy"),
            b": hello proxy\n",
            b":\n",
        ),
    ];
    for (layer, open, keep_alive) in cases {
        let (addr, mut accepted) = scripted(layer, SSE).await;
        let (_client, response) = get(addr, Proto::Http2, "/").await;
        let opened = Instant::now();
        let _app = accept(&mut accepted).await;
        let mut body = response.into_body();
        let mut timed = Timed::default();
        let mut expected = open.to_vec();
        expected.extend_from_slice(keep_alive);
        expected.extend_from_slice(keep_alive);
        read_until_suffix(&mut body, &mut timed, &expected).await;
        assert_eq!(timed.bytes(), expected);
        if !open.is_empty() {
            let at = since(opened, timed.frames[0].0);
            assert!(
                at < Duration::from_millis(80),
                "comment on open after {at:?}"
            );
        }
    }
}

#[tokio::test]
async fn without_keep_alive_silence_stays_silent() {
    for layer in [
        SseLayer::new().without_keep_alive(),
        SseLayer::new().keep_alive(Duration::ZERO),
    ] {
        let (addr, mut accepted) = scripted(layer, SSE).await;
        let (_client, response) = get(addr, Proto::Http1, "/").await;
        let app = accept(&mut accepted).await;
        let mut body = response.into_body();
        let mut timed = Timed::default();
        read_until(
            &mut body,
            &mut timed,
            Instant::now() + Duration::from_millis(400),
        )
        .await;
        assert!(timed.frames.is_empty(), "{timed:?}");
        app.send("data: live\n\n").await;
        read_until_suffix(&mut body, &mut timed, b"data: live\n\n").await;
        assert_eq!(timed.bytes(), b"data: live\n\n");
    }
}

#[tokio::test]
async fn an_event_split_across_silences_gets_no_keep_alive_inside() {
    // Each script: the frames with a pause after each, in ms. The pauses are several intervals
    // long, so a layer that ignored event boundaries would put keep-alives inside the event.
    let scripts: [&[(&[u8], u64)]; 4] = [
        &[(b"data: hel", 250), (b"lo\n", 250), (b"\n", 0)],
        &[(b"data: a\r", 250), (b"\n\r", 250), (b"\n", 0)],
        &[
            (b"data: a\r", 250),
            (b"\r", 250),
            (b"data: b\r\r", 250),
            (b"\n", 0),
        ],
        &[(b"data: a\n\ndata: b", 250), (b"\n\n", 0)],
    ];
    for script in scripts {
        let (addr, mut accepted) =
            scripted(SseLayer::new().keep_alive(Duration::from_millis(50)), SSE).await;
        let (_client, response) = get(addr, Proto::Http1, "/").await;
        let app = accept(&mut accepted).await;
        let mut stream = Vec::new();
        for (frame, pause) in script {
            app.send(frame.to_vec()).await;
            stream.extend_from_slice(frame);
            tokio::time::sleep(Duration::from_millis(*pause)).await;
        }
        let mut body = response.into_body();
        let mut timed = Timed::default();
        // The stream ends at a boundary: keep-alives follow.
        read_until(
            &mut body,
            &mut timed,
            Instant::now() + Duration::from_millis(200),
        )
        .await;
        let received = timed.bytes();
        let rest = match_keep_alives(&received, &stream);
        assert!(
            rest.is_some_and(|tail| tail == b":\n".repeat(tail.len() / 2) && !tail.is_empty()),
            "{script:?}: {:?}",
            String::from_utf8_lossy(&received)
        );
    }
}

/// Matches `received` against the inner `stream` with any number of `:\n` keep-alives where
/// the stream is between events; returns what follows the end of the stream, or `None` if
/// anything else differs. A keep-alive after a CR takes the place of the LF that may follow
/// it (the CR already ended the line), so that LF must be gone.
fn match_keep_alives<'a>(received: &'a [u8], stream: &[u8]) -> Option<&'a [u8]> {
    let (mut r, mut i) = (0, 0);
    loop {
        if i == stream.len() {
            return Some(&received[r..]);
        }
        if received[r..].starts_with(b":\n") && between_events(&stream[..i]) {
            r += 2;
            if stream[..i].ends_with(b"\r") && stream.get(i) == Some(&b'\n') {
                i += 1;
            }
            continue;
        }
        if received.get(r) != Some(&stream[i]) {
            return None;
        }
        r += 1;
        i += 1;
    }
}

/// Whether `prefix` of an event stream ends between events: at the start of a line, with no
/// field line since the last blank line (comment lines are no event content).
fn between_events(prefix: &[u8]) -> bool {
    if !prefix.is_empty() && !prefix.ends_with(b"\n") && !prefix.ends_with(b"\r") {
        return false;
    }
    let mut open = false;
    let mut rest = prefix;
    while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        let line = &rest[..end];
        if line.is_empty() {
            open = false;
        } else if line[0] != b':' {
            open = true;
        }
        let skip = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    !open
}

#[test]
fn the_matcher_allows_keep_alives_between_events_only() {
    let stream = b"data: a\r\r\ndata: b\n\n";
    assert_eq!(
        match_keep_alives(b"data: a\r\r:\ndata: b\n\n:\n", stream),
        Some(&b":\n"[..])
    );
    assert!(match_keep_alives(b"data: a\r\r:\n\ndata: b\n\n", stream).is_none());
    assert!(match_keep_alives(b"data: a\r:\n\r\ndata: b\n\n", stream).is_none());
    assert!(match_keep_alives(b"data: a\r\r\ndata: b\n:\n\n", stream).is_none());
    assert!(match_keep_alives(b":\n: c\n:\ndata: x\n\n", b": c\ndata: x\n\n").is_some());
}

/// Events with every line-ending style, as the inner body writes them.
fn event_strategy() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "[a-z ]{0,12}".prop_map(|text| format!("data: {text}")),
        "[a-z]{1,6}".prop_map(|name| format!("event: {name}")),
        "[0-9]{1,4}".prop_map(|id| format!("id: {id}")),
        "[a-z ]{0,8}".prop_map(|text| format!(": {text}")),
    ];
    let ending = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
    prop::collection::vec((line, ending), 1..4).prop_map(|lines| {
        let mut event = String::new();
        for (line, ending) in &lines {
            event.push_str(line);
            event.push_str(ending);
        }
        // The blank line in the style of the last line end: a CR then an LF would be one CRLF.
        event.push_str(lines[lines.len() - 1].1);
        event.into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the cuts and pauses, the client receives the inner stream with keep-alives only
    /// between events, and decodes the same events as from the inner stream alone.
    #[test]
    fn keep_alives_never_land_inside_an_event(
        events in prop::collection::vec(event_strategy(), 1..6),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), 0u64..3), 1..10),
    ) {
        let stream: Vec<u8> = events.concat();
        let mut offsets: Vec<usize> = cuts.iter().map(|(at, _)| at.index(stream.len() + 1)).collect();
        offsets.push(stream.len());
        offsets.sort_unstable();
        let pauses: Vec<u64> = cuts.iter().map(|(_, pause)| pause * 40).collect();

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let received = runtime.block_on(async {
            let (addr, mut accepted) =
                scripted(SseLayer::new().keep_alive(Duration::from_millis(30)), SSE).await;
            let (_client, response) = get(addr, Proto::Http1, "/").await;
            let app = accept(&mut accepted).await;
            let mut from = 0;
            for (to, pause) in offsets.iter().zip(pauses.iter().chain(std::iter::repeat(&0))) {
                app.send(stream[from..*to].to_vec()).await;
                from = *to;
                tokio::time::sleep(Duration::from_millis(*pause)).await;
            }
            drop(app);
            let received = common::read_body(response.into_body()).await;
            assert!(received.error.is_none(), "{:?}", received.error);
            received
        });

        let rest = match_keep_alives(&received.bytes, &stream);
        prop_assert!(
            rest.is_some_and(|tail| tail == b":\n".repeat(tail.len() / 2)),
            "received {:?}",
            String::from_utf8_lossy(&received.bytes)
        );
        let inner_only = common::Received { bytes: stream.clone(), error: None };
        prop_assert_eq!(received.events(), inner_only.events());
    }
}
