//! Encoder and decoder against each other: whatever an `Event` is built from, a browser-exact
//! parser receives exactly that event back, however the bytes are chunked, and `SseBody`
//! writes exactly the bytes `to_bytes` gives.

mod common;

use common::split;

use std::time::Duration;

use futures::stream;
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower_sse::{Event, MessageEvent, Parser, SseBody};

/// Text that stresses the encoder: any Unicode, with line breaks of every kind, spaces,
/// colons, field names, NULs and BOMs much more frequent than chance.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(String::from),
        2 => Just("\n".to_owned()),
        2 => Just("\r".to_owned()),
        2 => Just("\r\n".to_owned()),
        1 => Just(" ".to_owned()),
        1 => Just(":".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just("\u{FEFF}".to_owned()),
        1 => prop_oneof![
            Just("data"),
            Just("event"),
            Just("id"),
            Just("retry"),
            Just("data: "),
            Just("id: 1"),
            Just("retry: 1"),
            Just("event: x"),
        ]
        .prop_map(str::to_owned),
        2 => "[a-z0-9 ]{0,8}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

/// Text without the given characters (an event type or id that the builder accepts).
fn text_without(banned: &'static [char]) -> impl Strategy<Value = String> {
    text().prop_map(move |s| s.chars().filter(|c| !banned.contains(c)).collect())
}

/// One builder call that adds lines.
#[derive(Debug, Clone)]
enum Part {
    Data(String),
    Comment(String),
    Json(String),
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        4 => text().prop_map(Part::Data),
        2 => text().prop_map(Part::Comment),
        1 => text().prop_map(Part::Json),
    ]
}

/// What to build an event from.
#[derive(Debug, Clone)]
struct Spec {
    name: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    /// The first data, so that the event is always dispatched.
    first: String,
    parts: Vec<Part>,
    /// Where in the builder chain the single-line fields are set (index into `parts`).
    fields_at: usize,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::option::of(text_without(&['\r', '\n'])),
        prop::option::of(text_without(&['\r', '\n', '\0'])),
        prop::option::of(any::<u64>()),
        text(),
        prop::collection::vec(part(), 0..6),
        any::<usize>(),
    )
        .prop_map(|(name, id, retry, first, parts, fields_at)| Spec {
            name,
            id,
            retry,
            first,
            fields_at,
            parts,
        })
}

fn set_fields(mut event: Event, spec: &Spec) -> Event {
    if let Some(name) = &spec.name {
        event = event.event(name).expect("no CR or LF");
    }
    if let Some(id) = &spec.id {
        event = event.id(id).expect("no CR, LF or NUL");
    }
    if let Some(millis) = spec.retry {
        event = event.retry(Duration::from_millis(millis));
    }
    event
}

fn build(spec: &Spec) -> Event {
    let mut event = Event::new().data(&spec.first);
    let at = spec.fields_at % (spec.parts.len() + 1);
    for (i, part) in spec.parts.iter().enumerate() {
        if i == at {
            event = set_fields(event, spec);
        }
        event = match part {
            Part::Data(text) => event.data(text),
            Part::Comment(text) => event.comment(text),
            Part::Json(text) => event.json_data(text).expect("a string serialises"),
        };
    }
    if at == spec.parts.len() {
        event = set_fields(event, spec);
    }
    event
}

/// Line breaks as a client sees them: `\r\n` and `\r` become `\n`.
fn normalise(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// The event a browser must receive for the spec.
fn expected(spec: &Spec) -> MessageEvent {
    let mut data = vec![normalise(&spec.first)];
    for part in &spec.parts {
        match part {
            Part::Data(text) => data.push(normalise(text)),
            Part::Comment(_) => {}
            Part::Json(text) => data.push(serde_json::to_string(text).unwrap()),
        }
    }
    MessageEvent {
        event: match spec.name.as_deref() {
            None | Some("") => "message".to_owned(),
            Some(name) => name.to_owned(),
        },
        data: data.join("\n"),
        last_event_id: spec.id.clone().unwrap_or_default(),
    }
}

fn parse(chunks: &[&[u8]]) -> (Vec<MessageEvent>, Parser) {
    let mut parser = Parser::new();
    for chunk in chunks {
        parser.feed(chunk).expect("well under the buffer limit");
    }
    parser.finish();
    (std::iter::from_fn(|| parser.next_event()).collect(), parser)
}

/// Checks that the wire form holds only `data:` and comment lines, ended by the one blank
/// line, with `\n` as the only line break.
fn assert_only_data_and_comments(wire: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(!wire.contains(&b'\r'), "a CR in {wire:?}");
    let body = wire.strip_suffix(b"\n\n");
    prop_assert!(body.is_some(), "no blank line at the end of {wire:?}");
    for line in body.unwrap().split(|&b| b == b'\n') {
        prop_assert!(
            line.starts_with(b"data: ") || line == b":" || line.starts_with(b": "),
            "line {:?} in {:?}",
            String::from_utf8_lossy(line),
            String::from_utf8_lossy(wire)
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_event_round_trips_in_any_chunking(
        spec in spec(),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let event = build(&spec);
        let wire = event.to_bytes();
        let (events, parser) = parse(&split(&wire, &cuts));
        prop_assert_eq!(events, vec![expected(&spec)]);
        prop_assert_eq!(parser.retry(), spec.retry.map(Duration::from_millis));
    }

    #[test]
    fn a_stream_of_events_round_trips(
        specs in prop::collection::vec(spec(), 1..5),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        let mut last_id = String::new();
        for spec in &specs {
            wire.extend_from_slice(&build(spec).to_bytes());
            // An event without an id carries the stream's last one, as in a browser.
            if let Some(id) = &spec.id {
                last_id.clone_from(id);
            }
            want.push(MessageEvent { last_event_id: last_id.clone(), ..expected(spec) });
        }
        let (events, _) = parse(&split(&wire, &cuts));
        prop_assert_eq!(events, want);
    }

    #[test]
    fn a_body_writes_every_event_exactly_as_to_bytes(
        specs in prop::collection::vec(spec(), 1..8),
        max_frame_bytes in 1usize..200,
    ) {
        let events: Vec<Event> = specs.iter().map(build).collect();
        let want: Vec<u8> = events.iter().flat_map(|event| event.to_bytes()).collect();
        let items = stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>));
        let body = SseBody::new(items).max_frame_bytes(max_frame_bytes);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got = runtime.block_on(body.collect()).expect("no error").to_bytes();
        prop_assert_eq!(&got[..], &want[..]);
    }

    #[test]
    fn data_and_comments_never_inject_fields_or_events(
        parts in prop::collection::vec(part(), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut event = Event::new();
        let mut has_data = false;
        for part in &parts {
            event = match part {
                Part::Data(text) => { has_data = true; event.data(text) }
                Part::Comment(text) => event.comment(text),
                Part::Json(text) => { has_data = true; event.json_data(text).unwrap() }
            };
        }
        let wire = event.to_bytes();
        assert_only_data_and_comments(&wire)?;
        let (events, parser) = parse(&split(&wire, &cuts));
        prop_assert_eq!(events.len(), usize::from(has_data));
        for got in events {
            prop_assert_eq!(got.event, "message");
            prop_assert_eq!(got.last_event_id, "");
        }
        prop_assert_eq!(parser.retry(), None);
        prop_assert_eq!(parser.last_event_id(), "");
    }

    #[test]
    fn event_and_id_refuse_exactly_the_characters_that_break_lines(value in text()) {
        let event = Event::new().event(&value);
        prop_assert_eq!(event.is_ok(), !value.contains(['\r', '\n']));
        let id = Event::new().id(&value);
        prop_assert_eq!(id.is_ok(), !value.contains(['\r', '\n', '\0']));
        if let Ok(event) = event {
            let wire = event.data("x").to_bytes();
            // One field line, one data line, the blank line: nothing injected.
            prop_assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 3);
            prop_assert!(!wire.contains(&b'\r'));
        }
    }
}
