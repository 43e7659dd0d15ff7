//! The encoder's wire form, byte for byte, against the WHATWG "Server-sent events" rules.

use std::time::Duration;

use std::fmt::Write as _;

use bytes::Bytes;
use proptest::prelude::*;
use tower_sse::{
    EncodedEvent, Event, EventError, EventErrorKind, EventField, EventId, EventName, MessageEvent,
    Parser,
};

/// The wire form as text, for readable failures.
fn wire(event: &Event) -> String {
    let bytes = event.to_bytes();
    assert_eq!(event.encoded_len(), bytes.len());
    String::from_utf8(bytes.to_vec()).expect("the wire form of text is text")
}

/// What a browser receives from the event.
fn received(event: &Event) -> Vec<MessageEvent> {
    let mut parser = Parser::new();
    parser.feed(&event.to_bytes()).unwrap();
    parser.finish();
    std::iter::from_fn(|| parser.next_event()).collect()
}

fn received_data(event: &Event) -> String {
    match &received(event)[..] {
        [one] => one.data.clone(),
        other => panic!("expected one event, got {other:?}"),
    }
}

// ----- data -----

#[test]
fn data_is_one_line_with_the_space() {
    assert_eq!(wire(&Event::new().data("hi")), "data: hi\n\n");
}

#[test]
fn data_splits_on_every_kind_of_line_break() {
    for (text, want) in [
        ("a\nb", "data: a\ndata: b\n\n"),
        ("a\r\nb", "data: a\ndata: b\n\n"),
        ("a\rb", "data: a\ndata: b\n\n"),
        ("a\n\nb", "data: a\ndata: \ndata: b\n\n"),
        ("a\r\rb", "data: a\ndata: \ndata: b\n\n"),
        ("a\n\rb", "data: a\ndata: \ndata: b\n\n"),
        ("a\r\r\nb", "data: a\ndata: \ndata: b\n\n"),
        ("a\r\n\r\nb", "data: a\ndata: \ndata: b\n\n"),
        ("a\nb\rc\r\nd", "data: a\ndata: b\ndata: c\ndata: d\n\n"),
    ] {
        assert_eq!(wire(&Event::new().data(text)), want, "{text:?}");
    }
}

#[test]
fn trailing_break_gives_a_final_empty_data_line() {
    for (text, want) in [
        ("a\n", "data: a\ndata: \n\n"),
        ("a\r\n", "data: a\ndata: \n\n"),
        ("a\r", "data: a\ndata: \n\n"),
        ("\n", "data: \ndata: \n\n"),
        ("\r\n", "data: \ndata: \n\n"),
        ("a\n\n", "data: a\ndata: \ndata: \n\n"),
    ] {
        assert_eq!(wire(&Event::new().data(text)), want, "{text:?}");
    }
    assert_eq!(received_data(&Event::new().data("a\n")), "a\n");
    assert_eq!(received_data(&Event::new().data("a\r\n")), "a\n");
}

#[test]
fn leading_break_gives_a_first_empty_data_line() {
    assert_eq!(wire(&Event::new().data("\na")), "data: \ndata: a\n\n");
    assert_eq!(received_data(&Event::new().data("\ra")), "\na");
}

#[test]
fn empty_data_is_still_dispatched() {
    assert_eq!(wire(&Event::new().data("")), "data: \n\n");
    assert_eq!(received_data(&Event::new().data("")), "");
}

#[test]
fn leading_space_survives() {
    let event = Event::new().data(" world");
    assert_eq!(wire(&event), "data:  world\n\n");
    assert_eq!(received_data(&event), " world");
    let event = Event::new().data("a\n b");
    assert_eq!(wire(&event), "data: a\ndata:  b\n\n");
    assert_eq!(received_data(&event), "a\n b");
}

#[test]
fn data_that_looks_like_fields_stays_data() {
    let event = Event::new().data("event: x\nid: 1\n\nretry: 5\n:c\ndata: y");
    assert_eq!(
        wire(&event),
        "data: event: x\ndata: id: 1\ndata: \ndata: retry: 5\ndata: :c\ndata: data: y\n\n"
    );
    assert_eq!(
        received(&event),
        [MessageEvent {
            event: "message".into(),
            data: "event: x\nid: 1\n\nretry: 5\n:c\ndata: y".into(),
            last_event_id: String::new(),
        }]
    );
}

#[test]
fn data_calls_append_lines() {
    let event = Event::new().data("a").data("b");
    assert_eq!(wire(&event), "data: a\ndata: b\n\n");
    assert_eq!(received_data(&event), "a\nb");
    let event = Event::new().data("a\n").data("").data("b");
    assert_eq!(wire(&event), "data: a\ndata: \ndata: \ndata: b\n\n");
    assert_eq!(received_data(&event), "a\n\n\nb");
}

#[test]
fn non_ascii_data_is_written_as_utf8() {
    let event = Event::new().data("é\u{2028}😀\u{85}\0");
    assert_eq!(wire(&event), "data: é\u{2028}😀\u{85}\0\n\n");
    assert_eq!(received_data(&event), "é\u{2028}😀\u{85}\0");
}

// ----- comments -----

#[test]
fn comment_lines() {
    for (text, want) in [
        ("hi", ": hi\n\n"),
        ("", ":\n\n"),
        (" x", ":  x\n\n"),
        ("a\nb", ": a\n: b\n\n"),
        ("a\r\nb\rc", ": a\n: b\n: c\n\n"),
        ("a\n", ": a\n:\n\n"),
        ("\n\n", ":\n:\n:\n\n"),
        ("data: x", ": data: x\n\n"),
    ] {
        assert_eq!(wire(&Event::new().comment(text)), want, "{text:?}");
    }
}

#[test]
fn comment_calls_append_lines_and_mix_with_data() {
    assert_eq!(
        wire(&Event::new().comment("a").comment("b")),
        ": a\n: b\n\n"
    );
    let event = Event::new().comment("x").data("1").comment("").data("2");
    assert_eq!(wire(&event), ": x\ndata: 1\n:\ndata: 2\n\n");
    assert_eq!(received_data(&event), "1\n2");
}

#[test]
fn comment_alone_dispatches_nothing() {
    assert_eq!(received(&Event::new().comment("a\n\nb")), []);
}

// ----- retry -----

#[test]
fn retry_in_whole_milliseconds() {
    for (delay, want) in [
        (Duration::from_secs(3), "retry: 3000\n\n"),
        (Duration::from_millis(1500), "retry: 1500\n\n"),
        (Duration::from_micros(1999), "retry: 1\n\n"),
        (Duration::from_micros(999), "retry: 0\n\n"),
        (Duration::ZERO, "retry: 0\n\n"),
        (
            Duration::from_secs(u64::MAX / 1000),
            "retry: 18446744073709551000\n\n",
        ),
    ] {
        assert_eq!(wire(&Event::new().retry(delay)), want, "{delay:?}");
    }
    let mut parser = Parser::new();
    parser
        .feed(&Event::new().retry(Duration::from_millis(2500)).to_bytes())
        .unwrap();
    assert_eq!(parser.retry(), Some(Duration::from_millis(2500)));
}

// ----- event and id -----

#[test]
fn event_and_id_lines() {
    let event = Event::new().event("token").unwrap();
    assert_eq!(wire(&event), "event: token\n\n");
    let event = Event::new().id("7").unwrap();
    assert_eq!(wire(&event), "id: 7\n\n");
    assert_eq!(wire(&Event::new().event("").unwrap()), "event: \n\n");
    assert_eq!(wire(&Event::new().id("").unwrap()), "id: \n\n");
    assert_eq!(wire(&Event::new().event(" a").unwrap()), "event:  a\n\n");
    assert_eq!(wire(&Event::new().id(" 1").unwrap()), "id:  1\n\n");
}

#[test]
fn full_event_in_call_order() {
    let event = Event::new()
        .event("token")
        .unwrap()
        .id("42")
        .unwrap()
        .retry(Duration::from_secs(1))
        .data("hi");
    assert_eq!(
        wire(&event),
        "event: token\nid: 42\nretry: 1000\ndata: hi\n\n"
    );
    assert_eq!(
        received(&event),
        [MessageEvent {
            event: "token".into(),
            data: "hi".into(),
            last_event_id: "42".into(),
        }]
    );
}

/// The lines of a wire form, sorted: for checks where only the set of lines matters.
fn sorted_lines(event: &Event) -> Vec<String> {
    let text = wire(event);
    let body = text.strip_suffix("\n\n").expect("ends with the blank line");
    let mut lines: Vec<String> = body.split('\n').map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn event_id_and_retry_replace_earlier_values() {
    assert_eq!(
        wire(&Event::new().event("a").unwrap().event("b").unwrap()),
        "event: b\n\n"
    );
    assert_eq!(
        wire(&Event::new().id("1").unwrap().id("2").unwrap()),
        "id: 2\n\n"
    );
    assert_eq!(
        wire(
            &Event::new()
                .retry(Duration::from_millis(1))
                .retry(Duration::from_millis(2))
        ),
        "retry: 2\n\n"
    );
    // Interleaved with other fields, each keeps exactly one line with the latest value.
    let event = Event::new()
        .event("a")
        .unwrap()
        .id("1")
        .unwrap()
        .retry(Duration::from_millis(10))
        .data("x")
        .event("b")
        .unwrap()
        .comment("c")
        .id("22")
        .unwrap()
        .retry(Duration::from_millis(20))
        .event("ccc")
        .unwrap()
        .data("y");
    assert_eq!(
        sorted_lines(&event),
        [
            ": c",
            "data: x",
            "data: y",
            "event: ccc",
            "id: 22",
            "retry: 20"
        ]
    );
    // Data and comment lines keep their order.
    let text = wire(&event);
    assert!(text.find("data: x").unwrap() < text.find("data: y").unwrap());
    assert_eq!(
        received(&event),
        [MessageEvent {
            event: "ccc".into(),
            data: "x\ny".into(),
            last_event_id: "22".into(),
        }]
    );
}

#[test]
fn replacing_with_shorter_and_longer_values_keeps_other_lines_intact() {
    let event = Event::new()
        .id("a-long-id")
        .unwrap()
        .event("e")
        .unwrap()
        .id("i")
        .unwrap()
        .event("a-longer-event-name")
        .unwrap()
        .id("")
        .unwrap();
    assert_eq!(sorted_lines(&event), ["event: a-longer-event-name", "id: "]);
}

#[test]
fn replacing_after_a_clone_leaves_the_clone_alone() {
    let first = Event::new().id("1").unwrap().data("x");
    let second = first.clone().id("2").unwrap();
    assert_eq!(wire(&first), "id: 1\ndata: x\n\n");
    assert_eq!(sorted_lines(&second), ["data: x", "id: 2"]);
}

// ----- json -----

#[test]
fn json_data_is_compact_json() {
    let event = Event::new()
        .json_data(&serde_json::json!({"a": 1, "b": [true, null]}))
        .unwrap();
    assert_eq!(wire(&event), "data: {\"a\":1,\"b\":[true,null]}\n\n");
}

#[test]
fn json_string_with_newlines_is_escaped_into_one_line() {
    let event = Event::new().json_data("line\nbreak\r").unwrap();
    assert_eq!(wire(&event), "data: \"line\\nbreak\\r\"\n\n");
}

#[test]
fn json_data_appends_like_data() {
    let event = Event::new()
        .data("a")
        .json_data(&1)
        .unwrap()
        .json_data(&[2])
        .unwrap();
    assert_eq!(wire(&event), "data: a\ndata: 1\ndata: [2]\n\n");
}

#[test]
fn json_with_a_derived_struct() {
    #[derive(serde::Serialize)]
    struct Token<'a> {
        index: u32,
        text: &'a str,
    }
    let event = Event::new()
        .event("token")
        .unwrap()
        .json_data(&Token {
            index: 3,
            text: " hi\n",
        })
        .unwrap();
    assert_eq!(
        wire(&event),
        "event: token\ndata: {\"index\":3,\"text\":\" hi\\n\"}\n\n"
    );
}

#[test]
fn raw_pretty_printed_json_stays_one_valid_event() {
    let pretty = "{\n  \"a\": 1,\r\n  \"b\": \"x\"\r}";
    let raw = serde_json::value::RawValue::from_string(pretty.to_owned()).unwrap();
    let event = Event::new().id("9").unwrap().json_data(&raw).unwrap();
    assert_eq!(
        wire(&event),
        "id: 9\ndata: {\ndata:   \"a\": 1,\ndata:   \"b\": \"x\"\ndata: }\n\n"
    );
    let got = received(&event);
    assert_eq!(got.len(), 1);
    let value: serde_json::Value = serde_json::from_str(&got[0].data).unwrap();
    assert_eq!(value, serde_json::json!({"a": 1, "b": "x"}));
}

#[test]
fn raw_json_with_blank_lines_cannot_dispatch_early() {
    let raw = serde_json::value::RawValue::from_string("[\n\n1\n\n]".to_owned()).unwrap();
    let event = Event::new().json_data(&raw).unwrap();
    assert_eq!(
        wire(&event),
        "data: [\ndata: \ndata: 1\ndata: \ndata: ]\n\n"
    );
    let got = received(&event);
    assert_eq!(got.len(), 1);
    let value: serde_json::Value = serde_json::from_str(&got[0].data).unwrap();
    assert_eq!(value, serde_json::json!([1]));
}

#[test]
fn json_error_is_typed() {
    use std::collections::BTreeMap;
    // serde_json refuses maps whose keys are not strings.
    let mut map = BTreeMap::new();
    map.insert(vec![1u8], 1);
    let err = Event::new().data("a").json_data(&map).unwrap_err();
    assert!(matches!(err.kind(), EventErrorKind::Json(_)), "{err:?}");
    assert!(err.to_string().contains("JSON"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

// ----- refused input -----

fn invalid(err: EventError) -> (EventField, char, usize) {
    match err.into_kind() {
        EventErrorKind::InvalidCharacter {
            field,
            character,
            position,
        } => (field, character, position),
        other => panic!("expected InvalidCharacter, got {other:?}"),
    }
}

#[test]
fn event_refuses_cr_and_lf() {
    for (name, character, position) in [
        ("a\nb", '\n', 1),
        ("a\rb", '\r', 1),
        ("\r\n", '\r', 0),
        ("ab\n", '\n', 2),
        ("é\n", '\n', 2),
    ] {
        let err = Event::new().event(name).unwrap_err();
        assert_eq!(
            invalid(err),
            (EventField::Event, character, position),
            "{name:?}"
        );
    }
    // NUL is harmless in an event type.
    assert_eq!(
        wire(&Event::new().event("a\0b").unwrap()),
        "event: a\0b\n\n"
    );
}

#[test]
fn id_refuses_cr_lf_and_nul() {
    for (id, character, position) in [
        ("1\n", '\n', 1),
        ("1\r", '\r', 1),
        ("1\0x", '\0', 1),
        ("\0", '\0', 0),
    ] {
        let err = Event::new().id(id).unwrap_err();
        assert_eq!(
            invalid(err),
            (EventField::Id, character, position),
            "{id:?}"
        );
    }
}

#[test]
fn errors_name_the_field_and_the_character() {
    let text = Event::new().event("a\nb").unwrap_err().to_string();
    assert!(text.contains("`event`"), "{text}");
    assert!(text.contains("line feed"), "{text}");
    let text = Event::new().event("a\rb").unwrap_err().to_string();
    assert!(text.contains("carriage return"), "{text}");
    let text = Event::new().id("a\0b").unwrap_err().to_string();
    assert!(text.contains("`id`"), "{text}");
    assert!(text.contains("NUL"), "{text}");
    let err: Box<dyn std::error::Error> = Box::new(Event::new().id("\n").unwrap_err());
    assert!(err.source().is_none());
}

// ----- conversions and the rest -----

#[test]
fn from_text_is_data() {
    assert_eq!(Event::from("a\nb"), Event::new().data("a\nb"));
    assert_eq!(Event::from(String::from(" x")), Event::new().data(" x"));
    assert_eq!(wire(&Event::from("hi")), "data: hi\n\n");
    assert_ne!(Event::from("a"), Event::from("b"));
}

#[test]
fn empty_event_is_a_lone_blank_line() {
    assert_eq!(wire(&Event::new()), "\n");
    assert_eq!(wire(&Event::default()), "\n");
    assert_eq!(received(&Event::new()), []);
}

#[test]
fn to_bytes_is_repeatable() {
    let event = Event::new().data("x").id("1").unwrap();
    assert_eq!(event.to_bytes(), event.to_bytes());
    assert_eq!(event.clone().to_bytes(), event.to_bytes());
}

#[test]
fn debug_shows_the_wire_form() {
    let text = format!("{:?}", Event::new().data("hi"));
    assert!(text.contains("data: hi"), "{text}");
}

// ----- names and ids checked at build time -----

const TOKEN: EventName = EventName::new("token");
const OTHER: EventName = EventName::new("other");
const SEVEN: EventId = EventId::new("7");

#[test]
fn checked_names_and_ids_write_what_the_fallible_builders_write() {
    let checked = Event::new().event_name(TOKEN).event_id(SEVEN).data("x");
    let fallible = Event::new()
        .event("token")
        .unwrap()
        .id("7")
        .unwrap()
        .data("x");
    assert_eq!(wire(&checked), wire(&fallible));
    assert_eq!(TOKEN.as_str(), "token");
    assert_eq!(SEVEN.as_str(), "7");
}

#[test]
fn checked_names_replace_earlier_names_of_either_kind() {
    let event = Event::new().event("first").unwrap().event_name(TOKEN);
    assert_eq!(wire(&event), "event: token\n\n");
    let event = Event::new().event_name(TOKEN).data("x").event_name(OTHER);
    assert_eq!(wire(&event), "data: x\nevent: other\n\n");
    let event = Event::new().event_id(SEVEN).id("8").unwrap();
    assert_eq!(wire(&event), "id: 8\n\n");
}

#[test]
#[should_panic(expected = "cannot hold a CR or LF")]
fn a_bad_name_outside_a_const_panics_at_once() {
    // In a `const` this is a build error (see the doctests); at run time it panics on the
    // literal, never on a value a client sent.
    let _ = EventName::new(std::hint::black_box("a\rb"));
}

#[test]
#[should_panic(expected = "cannot hold a CR, LF or NUL")]
fn a_bad_id_outside_a_const_panics_at_once() {
    let _ = EventId::new(std::hint::black_box("a\0b"));
}

// ----- data from bytes -----

#[test]
fn data_bytes_is_data_for_utf8() {
    for text in ["", "hi", " lead", "a\r\nb\rc\n", "中文 😀"] {
        let from_bytes = Event::new()
            .data_bytes(Bytes::copy_from_slice(text.as_bytes()))
            .unwrap();
        assert_eq!(
            wire(&from_bytes),
            wire(&Event::new().data(text)),
            "{text:?}"
        );
        let from_slice = Event::new().data_bytes(text.as_bytes()).unwrap();
        assert_eq!(
            wire(&from_slice),
            wire(&Event::new().data(text)),
            "{text:?}"
        );
    }
}

#[test]
fn data_bytes_refuses_invalid_utf8_and_adds_nothing() {
    let event = Event::new().data("kept");
    for bad in [&b"\xFF"[..], b"ok \xC3", b"\xED\xA0\x80 surrogate"] {
        match event.clone().data_bytes(bad) {
            Err(err) if matches!(err.kind(), EventErrorKind::NotUtf8(_)) => {
                let text = err.to_string();
                assert!(text.contains("not UTF-8"), "{text}");
            }
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
    assert_eq!(wire(&event), "data: kept\n\n");
    let err: Box<dyn std::error::Error> = Box::new(Event::new().data_bytes(b"\xFF").unwrap_err());
    assert!(err.source().is_some());
}

// ----- the data writer -----

#[test]
fn data_writer_formats_straight_into_the_event() {
    let mut writer = Event::new().event_name(TOKEN).data_writer();
    write!(writer, "{}+{}={}", 1, 2, 1 + 2).unwrap();
    let event = writer.finish().event_id(SEVEN);
    assert_eq!(wire(&event), "event: token\ndata: 1+2=3\nid: 7\n\n");
}

#[test]
fn data_writer_with_nothing_written_is_empty_data() {
    assert_eq!(wire(&Event::new().data_writer().finish()), "data: \n\n");
    assert_eq!(received_data(&Event::new().data_writer().finish()), "");
}

#[test]
fn data_writer_joins_a_crlf_split_across_writes() {
    let mut writer = Event::new().data_writer();
    writer.write_str("a\r").unwrap();
    writer.write_str("").unwrap();
    writer.write_str("\nb\r").unwrap();
    writer.write_str("c").unwrap();
    assert_eq!(wire(&writer.finish()), "data: a\ndata: b\ndata: c\n\n");
}

#[test]
fn data_writer_after_data_adds_lines() {
    let mut writer = Event::new().data("first").data_writer();
    writer.write_str("second").unwrap();
    assert_eq!(received_data(&writer.finish()), "first\nsecond");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// However the text is cut into writes, the writer writes what `data` writes.
    #[test]
    fn data_writer_matches_data_at_any_split(
        text in "[a \r\n\u{e9}\u{1F600}]{0,24}",
        cuts in proptest::collection::vec(0usize..32, 0..6),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut % (text.len() + 1)).collect();
        cuts.retain(|&cut| text.is_char_boundary(cut));
        cuts.sort_unstable();
        let mut writer = Event::new().data_writer();
        let mut start = 0;
        for cut in cuts.into_iter().chain([text.len()]) {
            writer.write_str(&text[start..cut]).unwrap();
            start = cut;
        }
        prop_assert_eq!(wire(&writer.finish()), wire(&Event::new().data(&text)));
    }
}

// ----- encoded once -----

#[test]
fn encoded_events_share_their_bytes_across_clones() {
    let event = Event::new().event_name(TOKEN).data("to all");
    let want = event.to_bytes();
    let encoded = event.encode();
    assert_eq!(encoded.as_bytes(), &want);
    let copies: Vec<Event> = (0..4).map(|_| Event::from(encoded.clone())).collect();
    for copy in &copies {
        assert_eq!(copy.to_bytes(), want);
        assert_eq!(
            copy.to_bytes().as_ptr(),
            encoded.as_bytes().as_ptr(),
            "copied"
        );
    }
    assert_eq!(EncodedEvent::from(copies[0].clone()), encoded);
    assert_eq!(encoded.clone().into_bytes(), want);
    assert!(format!("{encoded:?}").contains("data: to all"));
}

#[test]
fn an_event_from_an_encoding_builds_on_like_any_other() {
    let encoded = Event::new().event_name(TOKEN).data("x").encode();
    // A later name replaces the encoded one; later data adds a line.
    let event = Event::from(encoded).event_name(OTHER).data("y");
    assert_eq!(wire(&event), "data: x\nevent: other\ndata: y\n\n");
}

#[test]
fn a_builder_result_is_no_larger_than_the_event() {
    // The error is one pointer, so `?` and `and_then` move an event, not an event and an error.
    assert_eq!(size_of::<EventError>(), size_of::<usize>());
    assert_eq!(size_of::<Result<Event, EventError>>(), size_of::<Event>());
}
