//! What must hold for `Event` built from any strings: every builder call either writes its
//! field or refuses it with the right typed `EventError`, and the wire form parses back to
//! exactly what was built, as one event (or none without data), never two.
//!
//! The input is a list of builder calls separated by 0xFF bytes (never part of UTF-8 text).
//! The first byte of a call picks the field (`d`ata, `c`omment, `e`vent, `i`d, `r`etry; any
//! other byte picks one by its value modulo 5) and the rest is the text, decoded as UTF-8 with
//! invalid sequences replaced; `retry` takes the text as milliseconds, or its length if it is
//! not a number.

use std::time::Duration;

use tower_sse::{Event, EventError, EventErrorKind, EventField, MessageEvent, Parser};

/// What a client must see once the event is parsed back.
#[derive(Default)]
struct Expected {
    /// The data lines joined with `\n`, if any `data` call was made.
    data: Option<String>,
    event: String,
    id: String,
    retry: Option<Duration>,
}

/// Builds the event that `input` describes, checking every builder call, then checks its
/// round trip through `to_bytes` and `Parser`.
pub fn check(input: &[u8]) {
    let mut event = Event::new();
    let mut expected = Expected::default();
    for call in input.split(|&byte| byte == 0xFF) {
        let Some((&which, text)) = call.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(text);
        let field = match which {
            b'd' => 0,
            b'c' => 1,
            b'e' => 2,
            b'i' => 3,
            b'r' => 4,
            other => other % 5,
        };
        event = match field {
            0 => data(event, &text, &mut expected),
            1 => event.comment(&*text),
            2 => event_type(event, &text, &mut expected),
            3 => id(event, &text, &mut expected),
            _ => retry(event, &text, &mut expected),
        };
    }
    round_trip(&event, &expected);
}

fn data(event: Event, text: &str, expected: &mut Expected) -> Event {
    // A client sees every line break (CRLF, CR, LF) as LF.
    let lines = text.replace("\r\n", "\n").replace('\r', "\n");
    match &mut expected.data {
        Some(data) => {
            data.push('\n');
            data.push_str(&lines);
        }
        None => expected.data = Some(lines),
    }
    event.data(text)
}

fn event_type(event: Event, name: &str, expected: &mut Expected) -> Event {
    match event.clone().event(name) {
        Ok(event) => {
            name.clone_into(&mut expected.event);
            event
        }
        Err(err) => {
            refused(err, EventField::Event, name, &['\r', '\n']);
            event
        }
    }
}

fn id(event: Event, id: &str, expected: &mut Expected) -> Event {
    match event.clone().id(id) {
        Ok(event) => {
            id.clone_into(&mut expected.id);
            event
        }
        Err(err) => {
            refused(err, EventField::Id, id, &['\r', '\n', '\0']);
            event
        }
    }
}

fn retry(event: Event, text: &str, expected: &mut Expected) -> Event {
    let millis = text.parse().unwrap_or(text.len() as u64);
    let delay = Duration::from_millis(millis);
    expected.retry = Some(delay);
    event.retry(delay)
}

/// Checks that a refused value really holds a forbidden character, and that the error names
/// the field and the first such character with its byte offset.
fn refused(err: EventError, field: EventField, value: &str, forbidden: &[char]) {
    let position = value
        .find(forbidden)
        .unwrap_or_else(|| panic!("{field:?} value {value:?} refused without cause: {err}"));
    let EventErrorKind::InvalidCharacter {
        field: got_field,
        character,
        position: got_position,
    } = *err.kind()
    else {
        panic!("{field:?} value {value:?} refused with an unexpected error: {err}");
    };
    assert_eq!(
        (got_field, character, got_position),
        (field, value[position..].chars().next().unwrap(), position),
        "wrong error for {field:?} value {value:?}"
    );
}

fn round_trip(event: &Event, expected: &Expected) {
    let bytes = event.to_bytes();
    assert_eq!(event.encoded_len(), bytes.len(), "encoded_len of {event:?}");
    assert_eq!(
        event.clone().to_bytes(),
        bytes,
        "a clone encodes differently"
    );

    let mut parser = Parser::with_max_buffer(usize::MAX);
    parser.feed(&bytes).expect("no limit to exceed");
    parser.finish();
    let events: Vec<MessageEvent> = std::iter::from_fn(|| parser.next_event()).collect();
    let want: Vec<MessageEvent> = expected
        .data
        .iter()
        .map(|data| MessageEvent {
            event: match &*expected.event {
                "" => "message".to_owned(),
                name => name.to_owned(),
            },
            data: data.clone(),
            last_event_id: expected.id.clone(),
        })
        .collect();
    assert_eq!(events, want, "parsed back from {bytes:?}");
    assert_eq!(
        parser.last_event_id(),
        expected.id,
        "last event id of {bytes:?}"
    );
    assert_eq!(parser.retry(), expected.retry, "retry of {bytes:?}");
}
