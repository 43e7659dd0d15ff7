//! The decoder against the WHATWG "Server-sent events" interpretation algorithm, rule by rule,
//! with every input also fed in every chunking that matters.

mod common;

use common::split;

use std::time::Duration;

use proptest::prelude::*;
use tower_sse::{MessageEvent, ParseError, Parser};

fn ev(event: &str, data: &str, last_event_id: &str) -> MessageEvent {
    MessageEvent {
        event: event.to_owned(),
        data: data.to_owned(),
        last_event_id: last_event_id.to_owned(),
    }
}

fn msg(data: &str) -> MessageEvent {
    ev("message", data, "")
}

/// Everything observable after feeding the chunks (up to the first error) and finishing.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<MessageEvent>,
    error: Option<ParseError>,
    retry: Option<Duration>,
    last_event_id: String,
}

fn run_with(mut parser: Parser, chunks: &[&[u8]]) -> Outcome {
    let mut error = None;
    for chunk in chunks {
        if let Err(err) = parser.feed(chunk) {
            error = Some(err);
            break;
        }
    }
    parser.finish();
    let events = std::iter::from_fn(|| parser.next_event()).collect();
    Outcome {
        events,
        error,
        retry: parser.retry(),
        last_event_id: parser.last_event_id().to_owned(),
    }
}

fn run(chunks: &[&[u8]]) -> Outcome {
    run_with(Parser::new(), chunks)
}

/// Feeds the input whole, byte by byte, split once at every position and split twice at every
/// pair of positions; all must give the same outcome, which is returned.
fn run_all_splits(max_buffer: usize, input: &[u8]) -> Outcome {
    let parser = || Parser::with_max_buffer(max_buffer);
    let whole = run_with(parser(), &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_with(parser(), &bytes), whole, "byte by byte: {input:?}");
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        assert_eq!(
            run_with(parser(), &[a, b]),
            whole,
            "split at {i}: {input:?}"
        );
        if input.len() <= 64 {
            for j in i..=input.len() {
                let (b, c) = input[i..].split_at(j - i);
                let chunks: [&[u8]; 4] = [a, b"", b, c];
                assert_eq!(run_with(parser(), &chunks), whole, "split at {i}, {j}");
            }
        }
    }
    whole
}

/// The events the input yields, checked to be the same for every chunking.
fn events(input: impl AsRef<[u8]>) -> Vec<MessageEvent> {
    let outcome = run_all_splits(1 << 20, input.as_ref());
    assert_eq!(outcome.error, None);
    outcome.events
}

fn retry_of(input: &str) -> Option<Duration> {
    run_all_splits(1 << 20, input.as_bytes()).retry
}

// ----- dispatch and fields -----

#[test]
fn one_data_line_is_one_message() {
    assert_eq!(events("data: hello\n\n"), [msg("hello")]);
}

#[test]
fn several_events_in_order() {
    assert_eq!(
        events("data: a\n\ndata: b\n\ndata: c\n\n"),
        [msg("a"), msg("b"), msg("c")]
    );
}

#[test]
fn data_lines_join_with_lf() {
    assert_eq!(events("data: a\ndata: b\ndata: c\n\n"), [msg("a\nb\nc")]);
    assert_eq!(events("data: a\ndata\ndata: c\n\n"), [msg("a\n\nc")]);
}

#[test]
fn only_the_last_lf_of_the_data_buffer_is_removed() {
    assert_eq!(events("data: a\ndata:\n\n"), [msg("a\n")]);
    assert_eq!(events("data\ndata\n\n"), [msg("\n")]);
}

#[test]
fn empty_data_field_dispatches_empty_data() {
    assert_eq!(events("data\n\n"), [msg("")]);
    assert_eq!(events("data:\n\n"), [msg("")]);
    assert_eq!(events("data: \n\n"), [msg("")]);
}

#[test]
fn no_data_dispatches_nothing_and_resets_the_event_type() {
    assert_eq!(events("event: ping\n\n"), []);
    assert_eq!(events("\n\n\n\n"), []);
    assert_eq!(events("event: ping\n\ndata: x\n\n"), [msg("x")]);
    assert_eq!(events("retry: 10\nid: 4\n\n"), []);
}

#[test]
fn event_field_names_the_event() {
    assert_eq!(events("event: token\ndata: x\n\n"), [ev("token", "x", "")]);
    // The last one wins, wherever it sits in the event.
    assert_eq!(
        events("event: a\ndata: x\nevent: b\n\n"),
        [ev("b", "x", "")]
    );
}

#[test]
fn event_type_defaults_to_message_and_resets_after_dispatch() {
    assert_eq!(events("event:\ndata: x\n\n"), [msg("x")]);
    assert_eq!(events("event\ndata: x\n\n"), [msg("x")]);
    assert_eq!(events("event: a\nevent\ndata: x\n\n"), [msg("x")]);
    assert_eq!(
        events("event: a\ndata: x\n\ndata: y\n\n"),
        [ev("a", "x", ""), msg("y")]
    );
}

#[test]
fn comments_are_ignored() {
    assert_eq!(
        events(": hello\n:\n:data: no\ndata: yes\n: between\n\n"),
        [msg("yes")]
    );
    // A comment line is not a blank line: it does not dispatch.
    assert_eq!(events("data: a\n:\ndata: b\n\n"), [msg("a\nb")]);
    assert_eq!(events(":\n\n"), []);
}

#[test]
fn line_without_colon_is_a_field_with_empty_value() {
    assert_eq!(events("data\n\n"), [msg("")]);
    assert_eq!(events("id: 1\nid\ndata: x\n\n"), [msg("x")]);
    assert_eq!(events("event: a\nevent\ndata: x\n\n"), [msg("x")]);
}

#[test]
fn exactly_one_leading_space_is_stripped() {
    assert_eq!(events("data:x\n\n"), [msg("x")]);
    assert_eq!(events("data: x\n\n"), [msg("x")]);
    assert_eq!(events("data:  x\n\n"), [msg(" x")]);
    assert_eq!(events("data:\tx\n\n"), [msg("\tx")]);
    assert_eq!(events("data: x \n\n"), [msg("x ")]);
    assert_eq!(events("event:  a\ndata: x\n\n"), [ev(" a", "x", "")]);
    assert_eq!(events("id:  7\ndata: x\n\n"), [ev("message", "x", " 7")]);
}

#[test]
fn only_the_first_colon_splits_name_and_value() {
    assert_eq!(events("data: a: b:c\n\n"), [msg("a: b:c")]);
    assert_eq!(events("data::\n\n"), [msg(":")]);
}

#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        events("foo: bar\nDATA: no\nData: no\ndata : no\n data: no\nx\ndata: yes\n\n"),
        [msg("yes")]
    );
    // An unknown field alone is no data: nothing is dispatched.
    assert_eq!(events("foo: bar\n\n"), []);
}

// ----- last event ID -----

#[test]
fn id_sets_last_event_id_of_its_event() {
    assert_eq!(events("id: 1\ndata: x\n\n"), [ev("message", "x", "1")]);
    // Position in the event does not matter.
    assert_eq!(events("data: x\nid: 1\n\n"), [ev("message", "x", "1")]);
    assert_eq!(
        events("id: 1\nid: 2\ndata: x\n\n"),
        [ev("message", "x", "2")]
    );
}

#[test]
fn last_event_id_persists_until_an_id_changes_it() {
    assert_eq!(
        events("id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\ndata: d\n\n"),
        [
            ev("message", "a", "1"),
            ev("message", "b", "1"),
            ev("message", "c", "2"),
            ev("message", "d", "2"),
        ]
    );
}

#[test]
fn empty_id_resets_last_event_id() {
    assert_eq!(
        events("id: 1\ndata: a\n\nid\ndata: b\n\nid: 3\ndata: c\n\nid:\ndata: d\n\n"),
        [
            ev("message", "a", "1"),
            ev("message", "b", ""),
            ev("message", "c", "3"),
            ev("message", "d", ""),
        ]
    );
}

#[test]
fn id_without_data_still_sets_last_event_id() {
    assert_eq!(events("id: 5\n\ndata: x\n\n"), [ev("message", "x", "5")]);
    let outcome = run(&[b"id: 9\n\n"]);
    assert_eq!(outcome.events, []);
    assert_eq!(outcome.last_event_id, "9");
}

#[test]
fn id_with_nul_is_ignored() {
    assert_eq!(
        events("id: 1\ndata: a\n\nid: 2\0\ndata: b\n\nid: \0\ndata: c\n\n"),
        [
            ev("message", "a", "1"),
            ev("message", "b", "1"),
            ev("message", "c", "1"),
        ]
    );
    // NUL is only refused in ids.
    assert_eq!(events("data: a\0b\n\n"), [msg("a\0b")]);
    assert_eq!(events("event: a\0b\ndata: x\n\n"), [ev("a\0b", "x", "")]);
}

#[test]
fn last_event_id_accessor_follows_dispatches() {
    let mut parser = Parser::new();
    assert_eq!(parser.last_event_id(), "");
    parser.feed(b"id: 1\ndata: a\n").unwrap();
    // Not dispatched yet.
    assert_eq!(parser.last_event_id(), "");
    parser.feed(b"\n").unwrap();
    assert_eq!(parser.last_event_id(), "1");
}

// ----- retry -----

#[test]
fn retry_in_milliseconds() {
    assert_eq!(retry_of("retry: 1500\n"), Some(Duration::from_millis(1500)));
    assert_eq!(retry_of("retry:0\n"), Some(Duration::ZERO));
    assert_eq!(retry_of("retry: 007\n"), Some(Duration::from_millis(7)));
    assert_eq!(retry_of("data: x\n\n"), None);
}

#[test]
fn retry_is_ignored_unless_all_ascii_digits() {
    for bad in [
        "retry\n",
        "retry:\n",
        "retry: \n",
        "retry:  15\n",
        "retry: 15 \n",
        "retry: 1a\n",
        "retry: -1\n",
        "retry: +1\n",
        "retry: 1.5\n",
        "retry: 1e3\n",
        "retry: one thousand\n",
        "retry: \u{0663}\n",
        "retry: \u{FF11}\n",
    ] {
        assert_eq!(retry_of(bad), None, "{bad:?}");
        // And it does not erase an earlier valid value.
        assert_eq!(
            retry_of(&format!("retry: 3\n{bad}")),
            Some(Duration::from_millis(3)),
            "{bad:?}"
        );
    }
}

#[test]
fn latest_valid_retry_wins() {
    assert_eq!(
        retry_of("retry: 1\nretry: 2\n\nretry: x\nretry: 3\n\n"),
        Some(Duration::from_millis(3))
    );
}

#[test]
fn huge_retry_saturates() {
    assert_eq!(
        retry_of("retry: 99999999999999999999999999\n"),
        Some(Duration::from_millis(u64::MAX))
    );
    assert_eq!(
        retry_of("retry: 18446744073709551615\n"),
        Some(Duration::from_millis(u64::MAX))
    );
}

#[test]
fn retry_applies_when_its_line_ends_and_dispatches_nothing() {
    let outcome = run(&[b"retry: 5\n"]);
    assert_eq!(outcome.retry, Some(Duration::from_millis(5)));
    assert_eq!(outcome.events, []);
    // An unterminated retry line at the end of the stream is not a line.
    assert_eq!(run(&[b"retry: 5"]).retry, None);
    let mut parser = Parser::new();
    parser.feed(b"data: x\nretry: 250\n").unwrap();
    assert_eq!(parser.retry(), Some(Duration::from_millis(250)));
    assert_eq!(parser.next_event(), None);
}

// ----- line ends -----

#[test]
fn crlf_cr_and_lf_all_end_lines() {
    let want = [msg("a\nb"), msg("c")];
    assert_eq!(events("data: a\ndata: b\n\ndata: c\n\n"), want);
    assert_eq!(events("data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"), want);
    assert_eq!(events("data: a\rdata: b\r\rdata: c\r\r"), want);
    assert_eq!(events("data: a\rdata: b\r\n\ndata: c\n\r"), want);
}

#[test]
fn lf_cr_is_two_line_ends() {
    // LF then CR: the CR ends an empty line, which dispatches.
    assert_eq!(events("data: a\n\rdata: b\n\r"), [msg("a"), msg("b")]);
}

#[test]
fn cr_cr_lf_is_two_line_ends() {
    assert_eq!(events("data: a\r\r\ndata: b\r\n\r\n"), [msg("a"), msg("b")]);
}

#[test]
fn cr_at_chunk_end_then_lf_is_one_line_end() {
    let outcome = run(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
    assert_eq!(outcome.events, [msg("a\nb")]);
    // Empty chunks in between change nothing.
    let outcome = run(&[b"data: a\r", b"", b"", b"\n", b"\r", b"", b"\n"]);
    assert_eq!(outcome.events, [msg("a")]);
    // A line ended by a CR at the end of a chunk is complete at once.
    let mut parser = Parser::new();
    parser.feed(b"data: a\n\r").unwrap();
    assert_eq!(parser.next_event(), Some(msg("a")));
    parser.feed(b"\ndata: b\n\n").unwrap();
    assert_eq!(parser.next_event(), Some(msg("b")));
    assert_eq!(parser.next_event(), None);
}

#[test]
fn dispatch_happens_as_soon_as_the_blank_line_arrives() {
    let mut parser = Parser::new();
    parser.feed(b"data: a\n").unwrap();
    assert_eq!(parser.next_event(), None);
    parser.feed(b"\n").unwrap();
    assert_eq!(parser.next_event(), Some(msg("a")));
}

// ----- byte order mark -----

#[test]
fn one_leading_bom_is_stripped() {
    assert_eq!(events("\u{FEFF}data: x\n\n"), [msg("x")]);
    assert_eq!(events("\u{FEFF}\n"), []);
    assert_eq!(events("\u{FEFF}:comment\ndata: x\n\n"), [msg("x")]);
}

#[test]
fn bom_split_across_chunks_is_stripped() {
    let outcome = run(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]);
    assert_eq!(outcome.events, [msg("x")]);
    let outcome = run(&[b"\xEF\xBB", b"", b"\xBF", b"data: x\n\n"]);
    assert_eq!(outcome.events, [msg("x")]);
}

#[test]
fn only_the_first_bom_is_stripped() {
    // The second one is part of the field name, which is then unknown.
    assert_eq!(events("\u{FEFF}\u{FEFF}data: x\n\n"), []);
    assert_eq!(events("\u{FEFF}\u{FEFF}\ndata: x\n\n"), [msg("x")]);
}

#[test]
fn bom_elsewhere_is_text() {
    assert_eq!(
        events("data: a\n\n\u{FEFF}data: b\n\ndata: \u{FEFF}c\n\n"),
        [msg("a"), msg("\u{FEFF}c")]
    );
    assert_eq!(events("\ndata: \u{FEFF}\n\n"), [msg("\u{FEFF}")]);
}

#[test]
fn partial_bom_is_invalid_utf8() {
    // EF BB then not BF: one replacement character starting the first line.
    assert_eq!(events(b"\xEF\xBBdata: x\n\n"), []);
    assert_eq!(events(b"\xEF\xBB\ndata: x\n\n"), [msg("x")]);
    assert_eq!(events(b"\xEF\n\n"), []);
    assert_eq!(events(b"\xEF\xBB:\n\n"), []);
    let outcome = run(&[b"\xEF\xBB"]);
    assert_eq!(outcome, run(&[]));
}

// ----- end of stream -----

#[test]
fn finish_discards_an_unterminated_event() {
    assert_eq!(events("data: x"), []);
    assert_eq!(events("data: x\n"), []);
    assert_eq!(events("data: x\r\n"), []);
    assert_eq!(events("data: a\n\ndata: b\n"), [msg("a")]);
    assert_eq!(events("data: a\n\ndata: b\n\r"), [msg("a"), msg("b")]);
}

#[test]
fn finish_forgets_the_id_of_the_discarded_event() {
    let outcome = run(&[b"id: 1\ndata: a\n\nid: 2\ndata: b\n"]);
    assert_eq!(outcome.events, [ev("message", "a", "1")]);
    assert_eq!(outcome.last_event_id, "1");
}

#[test]
fn finish_leaves_queued_events_readable() {
    let mut parser = Parser::new();
    parser.feed(b"data: a\n\ndata: b\n\ndata: c").unwrap();
    parser.finish();
    assert_eq!(parser.next_event(), Some(msg("a")));
    assert_eq!(parser.next_event(), Some(msg("b")));
    assert_eq!(parser.next_event(), None);
}

#[test]
fn after_finish_a_new_stream_starts_clean() {
    let mut parser = Parser::new();
    parser
        .feed(b"retry: 7\nid: 1\ndata: a\n\nevent: e\nid: 2\ndata: part")
        .unwrap();
    parser.finish();
    // The unterminated event left nothing behind; a new stream may start with a BOM again.
    parser.feed("\u{FEFF}data: b\n\n".as_bytes()).unwrap();
    assert_eq!(parser.next_event(), Some(ev("message", "a", "1")));
    assert_eq!(parser.next_event(), Some(ev("message", "b", "1")));
    assert_eq!(parser.retry(), Some(Duration::from_millis(7)));
}

#[test]
fn finish_drops_a_pending_cr() {
    let mut parser = Parser::new();
    parser.feed(b"data: a\r").unwrap();
    parser.finish();
    // The LF starts a new stream: it is an empty line, not the end of the old CR.
    parser.feed(b"\ndata: b\n\n").unwrap();
    assert_eq!(parser.next_event(), Some(msg("b")));
    assert_eq!(parser.next_event(), None);
}

// ----- UTF-8 -----

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    assert_eq!(events(b"data: a\xFFb\n\n"), [msg("a\u{FFFD}b")]);
    assert_eq!(events(b"data: \xC0\x80\n\n"), [msg("\u{FFFD}\u{FFFD}")]);
    // A truncated sequence is one replacement character, ended by the line end.
    assert_eq!(events(b"data: \xE2\x82\n\n"), [msg("\u{FFFD}")]);
    assert_eq!(events(b"data: \xF0\x9F\x98\n\n"), [msg("\u{FFFD}")]);
    assert_eq!(events(b"data: \xF0\x9F\x98x\n\n"), [msg("\u{FFFD}x")]);
    assert_eq!(
        events(b"data: \xED\xA0\x80\n\n"),
        [msg("\u{FFFD}\u{FFFD}\u{FFFD}")]
    );
    assert_eq!(
        events(b"event: \xFF\nid: \xFE\ndata: x\n\n"),
        [ev("\u{FFFD}", "x", "\u{FFFD}")]
    );
    // A truncated sequence before the colon does not swallow it.
    assert_eq!(events(b"data\xE2:x\n\n"), []);
}

#[test]
fn multibyte_characters_split_across_chunks_decode() {
    let text = "data: é€😀 日本\n\n";
    assert_eq!(events(text), [msg("é€😀 日本")]);
    let bytes = text.as_bytes();
    // Split in the middle of the four-byte character.
    let at = text.find('😀').unwrap() + 2;
    assert_eq!(
        run(&[&bytes[..at], &bytes[at..]]).events,
        [msg("é€😀 日本")]
    );
}

// ----- bounded memory -----

#[test]
fn too_large_line_is_an_error() {
    let mut parser = Parser::with_max_buffer(16);
    assert_eq!(
        parser.feed(b"data: 0123456789abcdef\n\n"),
        Err(ParseError::TooLarge)
    );
    assert_eq!(parser.next_event(), None);
}

#[test]
fn line_of_exactly_max_buffer_fits() {
    // The line `data: 0123456789` is 16 bytes.
    let outcome = run_all_splits(16, b"data: 0123456789\n\n");
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.events, [msg("0123456789")]);
    let outcome = run_all_splits(15, b"data: 0123456789\n\n");
    assert_eq!(outcome.error, Some(ParseError::TooLarge));
    assert_eq!(outcome.events, []);
}

#[test]
fn unterminated_line_counts_too() {
    let mut parser = Parser::with_max_buffer(8);
    assert_eq!(parser.feed(b"data: 012"), Err(ParseError::TooLarge));
    let mut parser = Parser::with_max_buffer(8);
    parser.feed(b"data: 01").unwrap();
    assert_eq!(parser.feed(b"2"), Err(ParseError::TooLarge));
}

#[test]
fn event_being_assembled_counts_across_lines() {
    // Each line fits, but the data buffer grows past the limit.
    let line = b"data: 0123456789\n";
    let mut parser = Parser::with_max_buffer(64);
    let mut result = Ok(());
    for _ in 0..10 {
        result = parser.feed(line);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(ParseError::TooLarge));
    // The same lines as separate events are fine: dispatched events do not count.
    let mut parser = Parser::with_max_buffer(64);
    for _ in 0..1000 {
        parser.feed(b"data: 0123456789\n\n").unwrap();
    }
    assert_eq!(std::iter::from_fn(|| parser.next_event()).count(), 1000);
}

#[test]
fn event_type_and_id_count_toward_the_limit() {
    let outcome = run_all_splits(24, b"event: 0123456789\nid: 0123456789\ndata: x\n\n");
    assert_eq!(outcome.error, Some(ParseError::TooLarge));
    let outcome = run_all_splits(40, b"event: 0123456789\nid: 0123456789\ndata: x\n\n");
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.events, [ev("0123456789", "x", "0123456789")]);
}

#[test]
fn replacement_characters_count_as_decoded() {
    // The line is 9 bytes, but four U+FFFD plus the LF take 13.
    let outcome = run_all_splits(12, b"data:\xFF\xFF\xFF\xFF\n\n");
    assert_eq!(outcome.error, Some(ParseError::TooLarge));
    // The error comes with the line that overflows, not with the next one.
    let mut parser = Parser::with_max_buffer(12);
    assert_eq!(
        parser.feed(b"data:\xFF\xFF\xFF\xFF\n"),
        Err(ParseError::TooLarge)
    );
    let outcome = run_all_splits(13, b"data:\xFF\xFF\xFF\xFF\n\n");
    assert_eq!(outcome.events, [msg("\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}")]);
}

#[test]
fn comments_never_count() {
    let mut parser = Parser::with_max_buffer(16);
    let comment = [b':'; 100_000];
    parser.feed(&comment).unwrap();
    parser.feed(&comment).unwrap();
    parser.feed(b"\ndata: x\n\n").unwrap();
    assert_eq!(parser.next_event(), Some(msg("x")));
}

#[test]
fn events_before_the_error_stay_readable_and_the_stream_stops() {
    let mut parser = Parser::with_max_buffer(16);
    let result = parser.feed(b"data: a\n\ndata: 0123456789abcdef\n\ndata: b\n\n");
    assert_eq!(result, Err(ParseError::TooLarge));
    // Every later feed is refused, however small.
    assert_eq!(parser.feed(b"data: c\n\n"), Err(ParseError::TooLarge));
    assert_eq!(parser.feed(b""), Err(ParseError::TooLarge));
    assert_eq!(parser.next_event(), Some(msg("a")));
    assert_eq!(parser.next_event(), None);
    parser.finish();
    assert_eq!(parser.next_event(), None);
}

#[test]
fn finish_after_an_error_allows_a_new_stream() {
    let mut parser = Parser::with_max_buffer(16);
    parser.feed(b"data: a\n\n").unwrap();
    assert!(parser.feed(&[b'x'; 1000]).is_err());
    parser.finish();
    assert_eq!(parser.next_event(), Some(msg("a")));
    parser.feed(b"data: b\n\n").unwrap();
    assert_eq!(parser.next_event(), Some(msg("b")));
}

#[test]
fn a_huge_line_fed_in_pieces_fails_early() {
    let mut parser = Parser::with_max_buffer(1024);
    let piece = [b'a'; 100];
    let fed = (0..1_000_000)
        .position(|_| parser.feed(&piece).is_err())
        .expect("the limit must stop the line");
    // The 11th piece makes the line 1,100 bytes.
    assert_eq!(fed, 10);
}

#[test]
fn default_limit_is_one_mebibyte() {
    let mut line = b"data: ".to_vec();
    line.resize(1 << 20, b'x');
    let mut parser = Parser::new();
    parser.feed(&line).unwrap();
    parser.feed(b"\n\n").unwrap();
    assert_eq!(parser.next_event().unwrap().data.len(), (1 << 20) - 6);
    let mut parser = Parser::default();
    line.push(b'x');
    assert_eq!(parser.feed(&line), Err(ParseError::TooLarge));
}

#[test]
fn too_large_displays_clearly() {
    let text = ParseError::TooLarge.to_string();
    assert!(text.contains("too large"), "{text}");
    assert!(text.contains("max_buffer"), "{text}");
    let _: &dyn std::error::Error = &ParseError::TooLarge;
}

// ----- a reference model of the spec, for the properties -----

/// The interpretation algorithm transcribed directly: decode the whole stream, split it into
/// lines, interpret each. No chunks, no limits.
fn reference(input: &[u8]) -> (Vec<MessageEvent>, Option<Duration>) {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let text = String::from_utf8_lossy(input);
    let mut lines: Vec<&str> = Vec::new();
    let mut rest = &*text;
    while let Some(end) = rest.find(['\r', '\n']) {
        lines.push(&rest[..end]);
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    // `rest` is an unterminated line: discarded at the end of the stream.
    let (mut data, mut event_type, mut id) = (String::new(), String::new(), String::new());
    let (mut retry, mut out) = (None, Vec::new());
    for line in lines {
        if line.is_empty() {
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            data.pop();
            let event = if event_type.is_empty() {
                "message".to_owned()
            } else {
                std::mem::take(&mut event_type)
            };
            out.push(ev(&event, &std::mem::take(&mut data), &id));
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "event" => event_type = value.to_owned(),
            "id" if !value.contains('\0') => id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                retry = Some(Duration::from_millis(value.parse().unwrap_or(u64::MAX)));
            }
            _ => {}
        }
    }
    (out, retry)
}

#[test]
fn reference_model_agrees_on_a_sample() {
    let input =
        b"\xEF\xBB\xBFid: 1\r\nevent: a\rdata: x\n\ndata\n\nretry: 9\n: c\ndata: y\xFF\r\n\r\n";
    let (events, retry) = reference(input);
    assert_eq!(
        events,
        [
            ev("a", "x", "1"),
            ev("message", "", "1"),
            ev("message", "y\u{FFFD}", "1")
        ]
    );
    assert_eq!(retry, Some(Duration::from_millis(9)));
    assert_eq!(run_all_splits(1 << 20, input).events, events);
}

// ----- properties -----

/// Bytes that look like event streams: field names, separators, every kind of line end,
/// NULs, BOMs, invalid and multi-byte UTF-8, and some noise.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data".to_vec()),
        Just(b"event".to_vec()),
        Just(b"id".to_vec()),
        Just(b"retry".to_vec()),
        Just(b":".to_vec()),
        Just(b": ".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\xEF\xBB".to_vec()),
        Just(b"\xFF".to_vec()),
        Just("é😀".as_bytes().to_vec()),
        Just(b"\xF0\x9F".to_vec()),
        "[0-9]{1,3}".prop_map(String::into_bytes),
        "[a-z]{1,4}".prop_map(String::into_bytes),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(piece, 0..48).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_outcome(
        input in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = run(&[&input]);
        prop_assert_eq!(run(&split(&input, &cuts)), whole);
    }

    #[test]
    fn any_chunking_gives_the_same_outcome_for_raw_bytes(
        input in prop::collection::vec(any::<u8>(), 0..256),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = run(&[&input]);
        prop_assert_eq!(run(&split(&input, &cuts)), whole);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(run(&bytes), run(&[&input]));
    }

    #[test]
    fn any_chunking_gives_the_same_outcome_under_a_small_limit(
        input in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        max_buffer in 0usize..48,
    ) {
        let whole = run_with(Parser::with_max_buffer(max_buffer), &[&input]);
        let chunked = run_with(Parser::with_max_buffer(max_buffer), &split(&input, &cuts));
        prop_assert_eq!(chunked, whole);
    }

    #[test]
    fn matches_the_reference_model(
        input in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (events, retry) = reference(&input);
        let outcome = run(&split(&input, &cuts));
        prop_assert_eq!(outcome.error, None);
        prop_assert_eq!(outcome.events, events);
        prop_assert_eq!(outcome.retry, retry);
    }

    #[test]
    fn never_panics_however_it_is_driven(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16),
        actions in prop::collection::vec(0u8..4, 0..16),
        max_buffer in 0usize..128,
    ) {
        let mut parser = Parser::with_max_buffer(max_buffer);
        for (i, chunk) in chunks.iter().enumerate() {
            let _ = parser.feed(chunk);
            match actions.get(i) {
                Some(0) => parser.finish(),
                Some(1) => { let _ = parser.next_event(); }
                Some(2) => { let _ = (parser.retry(), parser.last_event_id().len()); }
                _ => {}
            }
        }
        parser.finish();
        while let Some(event) = parser.next_event() {
            prop_assert!(!event.event.is_empty());
        }
    }
}

/// Counts the bytes allocated and not yet freed by the current thread, so that a test can
/// see what a parser holds.
mod held_memory {
    use std::{
        alloc::{GlobalAlloc, Layout, System},
        cell::Cell,
    };

    struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    fn add(bytes: isize) {
        let _ = LIVE.try_with(|live| live.set(live.get() + bytes));
    }

    // SAFETY: every call is forwarded to the system allocator unchanged; the counting only
    // reads the layouts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let ptr = System.alloc(layout);
            if !ptr.is_null() {
                add(layout.size() as isize);
            }
            ptr
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout);
            add(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let new = System.realloc(ptr, layout, new_size);
            if !new.is_null() {
                add(new_size as isize - layout.size() as isize);
            }
            new
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Bytes this thread holds now.
    pub fn live() -> isize {
        LIVE.with(Cell::get)
    }
}

#[test]
fn what_a_parser_holds_is_bounded_by_max_buffer_and_the_chunk_fed() {
    const MAX_BUFFER: usize = 1024;
    // 1 MiB of the smallest events there are, in one chunk, then in 4 KiB chunks.
    let input = b"data:\n\n".repeat((1 << 20) / 7);
    let count = input.len() / 7;
    for chunk_len in [input.len(), 4096] {
        let mut parser = Parser::with_max_buffer(MAX_BUFFER);
        let mut taken = 0;
        let mut most = 0;
        for chunk in input.chunks(chunk_len) {
            let before = held_memory::live();
            parser.feed(chunk).unwrap();
            let held = held_memory::live() - before;
            most = most.max(held);
            assert!(
                held <= 4 * (chunk.len() + MAX_BUFFER) as isize,
                "a {} byte chunk left {held} bytes held",
                chunk.len()
            );
            // Draining after every feed still gives every event, in order.
            while let Some(event) = parser.next_event() {
                assert_eq!(event, msg(""));
                taken += 1;
            }
        }
        assert_eq!(taken, count, "chunks of {chunk_len}");
        println!("chunks of {chunk_len}: at most {most} bytes held after a feed");
    }

    // Ids and event types survive the compact queue, each event with the id current at its
    // dispatch.
    let mut parser = Parser::with_max_buffer(MAX_BUFFER);
    parser
        .feed(b"id: 1\ndata: a\n\nevent: x\ndata: b\n\nid: 2\nevent: y\ndata: c\ndata: d\n\nid\ndata: e\n\n")
        .unwrap();
    let events: Vec<_> = std::iter::from_fn(|| parser.next_event()).collect();
    assert_eq!(
        events,
        [
            ev("message", "a", "1"),
            ev("x", "b", "1"),
            ev("y", "c\nd", "2"),
            ev("message", "e", ""),
        ]
    );
}
