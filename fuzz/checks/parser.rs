//! What must hold for `Parser` on any bytes: no panic, the same outcome whatever the chunking,
//! every event within `max_buffer`, and retained memory bounded by `max_buffer`, not by the
//! length of the stream.
//!
//! Needs the counting allocator of `meter.rs` installed, as `crate::meter`.

use std::time::Duration;

use tower_sse::{MessageEvent, ParseError, Parser};

use crate::meter;

/// Everything observable after feeding a stream (up to the first error) and finishing it.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<MessageEvent>,
    error: Option<ParseError>,
    retry: Option<Duration>,
    last_event_id: String,
}

/// Checks the parser on `input`, taken as a whole stream, with the default buffer limit and
/// with a small one (so that lines and events past the limit are exercised too).
pub fn check(input: &[u8]) {
    let small = 8 + input.len() % 64;
    for max_buffer in [None, Some(small)] {
        let outcome = same_outcome_whatever_the_chunking(input, max_buffer);
        if let Some(max_buffer) = max_buffer {
            for event in &outcome.events {
                assert!(
                    event.data.len() + event.last_event_id.len() <= max_buffer
                        && event.event.len() <= max_buffer.max("message".len()),
                    "an event larger than max_buffer {max_buffer}: {event:?}"
                );
            }
            retained_memory_is_bounded(input, max_buffer);
        }
    }
}

fn parser(max_buffer: Option<usize>) -> Parser {
    max_buffer.map_or_else(Parser::new, Parser::with_max_buffer)
}

fn run<'a>(max_buffer: Option<usize>, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut parser = parser(max_buffer);
    let mut events = Vec::new();
    let mut error = None;
    for chunk in chunks {
        let result = parser.feed(chunk);
        events.extend(std::iter::from_fn(|| parser.next_event()));
        if let Err(err) = result {
            error = Some(err);
            break;
        }
    }
    parser.finish();
    events.extend(std::iter::from_fn(|| parser.next_event()));
    Outcome {
        events,
        error,
        retry: parser.retry(),
        last_event_id: parser.last_event_id().to_owned(),
    }
}

/// Feeds `input` whole, byte by byte, cut around every CR (where a CRLF may be split) and in
/// pseudo-random pieces; every way must give the outcome of the whole, which is returned.
fn same_outcome_whatever_the_chunking(input: &[u8], max_buffer: Option<usize>) -> Outcome {
    let whole = run(max_buffer, [input]);
    let chunkings: [(&str, Vec<&[u8]>); 3] = [
        ("byte by byte", input.chunks(1).collect()),
        ("cut around every CR", cut_around_cr(input)),
        ("in pseudo-random pieces", random_pieces(input)),
    ];
    for (how, chunks) in chunkings {
        assert_eq!(
            run(max_buffer, chunks),
            whole,
            "fed {how} (max_buffer {max_buffer:?}), the outcome differs from the whole"
        );
    }
    whole
}

/// The input cut right before and right after every CR.
fn cut_around_cr(input: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for (i, &byte) in input.iter().enumerate() {
        if byte == b'\r' {
            chunks.push(&input[start..i]);
            chunks.push(&input[i..i + 1]);
            start = i + 1;
        }
    }
    chunks.push(&input[start..]);
    chunks
}

/// The input in pieces of 1 to 16 bytes, the sizes drawn from a generator seeded by the input
/// (so the same input is always cut the same way, and a new input a new way).
fn random_pieces(input: &[u8]) -> Vec<&[u8]> {
    // FNV-1a of the input, then xorshift64.
    let mut state = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut chunks = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (1 + state % 16) as usize;
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        chunks.push(piece);
        rest = tail;
    }
    chunks
}

/// Feeds `input` byte by byte, taking and dropping each event as it comes, and checks after
/// every byte that the parser holds no more heap than a bound set by `max_buffer` alone.
fn retained_memory_is_bounded(input: &[u8], max_buffer: usize) {
    // The line, the data, event type and id buffers and the last id each hold at most a few
    // times `max_buffer` (capacity doubling, U+FFFD replacing single bytes), plus the queue.
    let bound = 16 * max_buffer as isize + 1024;
    let mut parser = Parser::with_max_buffer(max_buffer);
    let baseline = meter::live_bytes();
    for (i, byte) in input.chunks(1).enumerate() {
        let result = parser.feed(byte);
        while parser.next_event().is_some() {}
        let held = meter::live_bytes() - baseline;
        assert!(
            held <= bound,
            "the parser holds {held} bytes after {} input bytes with max_buffer {max_buffer}",
            i + 1
        );
        if result.is_err() {
            break;
        }
    }
}
