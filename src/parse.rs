//! [`Parser`]: a decoder of `text/event-stream` bodies that behaves exactly as a browser's
//! `EventSource` does.
//!
//! It follows the interpretation algorithm of the WHATWG HTML "Server-sent events" section rule
//! for rule, takes the stream in chunks of any size (the output never depends on where they are
//! split) and keeps its memory bounded, so it is safe to point at untrusted servers.

use std::{borrow::Cow, fmt, time::Duration};

/// The byte order mark a stream may start with; the UTF-8 decoder drops the first one.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// The default bound on the bytes a [`Parser`] holds for the event being assembled: 1 MiB.
const DEFAULT_MAX_BUFFER: usize = 1024 * 1024;

/// One dispatched event, as a browser hands it to a `message` (or named) listener.
///
/// ```
/// use tower_sse::Parser;
///
/// let mut parser = Parser::new();
/// parser.feed(b"event: answer\nid: 7\ndata: 4\ndata: 2\n\n")?;
/// let event = parser.next_event().unwrap();
/// assert_eq!(event.event, "answer"); // "message" when the stream names none
/// assert_eq!(event.data, "4\n2");
/// assert_eq!(event.last_event_id, "7");
/// # Ok::<(), tower_sse::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MessageEvent {
    /// The event type: the last `event:` field of the event, or `"message"` when there was none
    /// or it was empty.
    pub event: String,
    /// The `data:` lines of the event joined with `\n`.
    pub data: String,
    /// The stream's last event ID when the event was dispatched: set by the latest `id:` field,
    /// here or in an earlier event, as `MessageEvent.lastEventId` is in a browser.
    pub last_event_id: String,
}

/// Why a [`Parser`] refused more input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The line or the event being assembled grew past the parser's `max_buffer`, so the
    /// stream is abandoned rather than letting memory grow; events dispatched before stay
    /// readable.
    TooLarge,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooLarge => f.write_str(
                "SSE line or event too large: it exceeds the parser's max_buffer, \
                 so the rest of the stream is not parsed",
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// Where the check for a leading byte order mark stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bom {
    /// At the start of the stream; this many bytes of the BOM matched so far.
    Checking(u8),
    /// Past the start of the stream.
    Done,
}

/// A spec-exact, incremental decoder of Server-Sent Events.
///
/// Feed it the body in chunks of any size with [`feed`](Parser::feed), take the events with
/// [`next_event`](Parser::next_event), and call [`finish`](Parser::finish) at the end of the
/// stream. Invalid UTF-8 becomes U+FFFD, as in a browser; the only error is
/// [`ParseError::TooLarge`], which keeps memory bounded.
///
/// Memory: the event being assembled is bounded by `max_buffer`; events dispatched but not
/// taken yet are queued in a compact form (their bytes and a few bytes of lengths, the event
/// type and id stored only when they change), so a caller that drains the queue after every
/// `feed` never has more than about four times the chunk just fed plus `max_buffer` in it,
/// however many tiny events the chunk held.
///
/// ```
/// use tower_sse::Parser;
///
/// let mut parser = Parser::new();
/// parser.feed(b"event: token\nid: 7\ndata: hel")?;
/// parser.feed(b"lo\r\n\r\n")?;
/// let event = parser.next_event().unwrap();
/// assert_eq!((&*event.event, &*event.data, &*event.last_event_id), ("token", "hello", "7"));
/// assert!(parser.next_event().is_none());
/// # Ok::<(), tower_sse::ParseError>(())
/// ```
#[derive(Debug)]
pub struct Parser {
    /// The bytes of a line that has not ended yet (never a comment line, which is skipped).
    line: Vec<u8>,
    /// The current line is a comment: its bytes are skipped up to the line end.
    in_comment: bool,
    /// The last line ended with a CR: an LF right after it belongs to the same line end.
    after_cr: bool,
    bom: Bom,
    /// The data buffer: every `data:` value followed by `\n`.
    data: String,
    /// The event type buffer.
    event_type: String,
    /// The last event ID buffer, set by `id:` fields.
    id_buffer: String,
    /// The last event ID string, copied from the buffer at every dispatch.
    last_event_id: String,
    retry: Option<Duration>,
    max_buffer: usize,
    /// The buffer limit was hit: the rest of the stream is refused.
    failed: bool,
    queue: Queue,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl Parser {
    /// A parser for a new stream that holds at most 1 MiB for the event being assembled.
    pub fn new() -> Self {
        Parser::with_max_buffer(DEFAULT_MAX_BUFFER)
    }

    /// A parser for a new stream that holds at most `max_buffer` bytes for the line and the
    /// event being assembled (line bytes plus data, event type and id), so a hostile or broken
    /// server cannot make it grow without bound.
    pub fn with_max_buffer(max_buffer: usize) -> Self {
        Parser {
            line: Vec::new(),
            in_comment: false,
            after_cr: false,
            bom: Bom::Checking(0),
            data: String::new(),
            event_type: String::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
            retry: None,
            max_buffer,
            failed: false,
            queue: Queue::default(),
        }
    }

    /// Parses the next chunk of the stream; complete events become available from
    /// [`next_event`](Parser::next_event).
    ///
    /// Fails with [`ParseError::TooLarge`] when the line or event being assembled would exceed
    /// `max_buffer`; events dispatched before that point stay queued, and every later call fails
    /// the same way until [`finish`](Parser::finish).
    pub fn feed(&mut self, input: &[u8]) -> Result<(), ParseError> {
        if self.failed {
            return Err(ParseError::TooLarge);
        }
        let result = self.feed_inner(input);
        if result.is_err() {
            self.failed = true;
            self.drop_partial();
        }
        result
    }

    fn feed_inner(&mut self, mut input: &[u8]) -> Result<(), ParseError> {
        if let Bom::Checking(_) = self.bom {
            input = self.strip_bom(input);
        }
        if input.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut self.after_cr) && input[0] == b'\n' {
            input = &input[1..];
        }

        // Finish the line that an earlier chunk started.
        if self.in_comment || !self.line.is_empty() {
            let Some(end) = memchr::memchr2(b'\r', b'\n', input) else {
                if !self.in_comment {
                    self.check_line(self.line.len() + input.len())?;
                    self.line.extend_from_slice(input);
                }
                return Ok(());
            };
            if self.in_comment {
                self.in_comment = false;
            } else {
                self.check_line(self.line.len() + end)?;
                self.line.extend_from_slice(&input[..end]);
                let line = std::mem::take(&mut self.line);
                let result = self.process_line(&line);
                self.line = line;
                self.line.clear();
                result?;
            }
            input = self.skip_line_end(input, end);
        }

        // Whole lines straight from the chunk, then keep the start of an unfinished one.
        while let Some(end) = memchr::memchr2(b'\r', b'\n', input) {
            let line = &input[..end];
            if line.first() != Some(&b':') {
                self.check_line(line.len())?;
                self.process_line(line)?;
            }
            input = self.skip_line_end(input, end);
        }
        if input.first() == Some(&b':') {
            self.in_comment = true;
        } else if !input.is_empty() {
            self.check_line(input.len())?;
            self.line.extend_from_slice(input);
        }
        Ok(())
    }

    /// Takes the next dispatched event, if any; events stay readable after
    /// [`finish`](Parser::finish) and after an error.
    pub fn next_event(&mut self) -> Option<MessageEvent> {
        self.queue.pop()
    }

    /// Ends the stream: an event that was not terminated by a blank line is discarded (with any
    /// `id:` it set), as a browser does.
    ///
    /// Queued events stay readable. The parser is then ready for a new stream (a reconnection):
    /// the last event ID and the retry delay are kept, as a browser keeps them.
    pub fn finish(&mut self) {
        self.drop_partial();
        self.bom = Bom::Checking(0);
        self.failed = false;
    }

    /// The reconnection delay from the latest valid `retry:` field, if any was seen.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The stream's last event ID as of the latest dispatch: what a browser would send as
    /// `Last-Event-ID` when it reconnects.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Drops everything of the event being assembled.
    fn drop_partial(&mut self) {
        self.line.clear();
        self.in_comment = false;
        self.after_cr = false;
        self.data.clear();
        self.event_type.clear();
        self.id_buffer.clone_from(&self.last_event_id);
    }

    /// Consumes the start of a stream's BOM, returning the rest of the input; on a mismatch the
    /// bytes that looked like a BOM become the start of the first line.
    fn strip_bom<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        let Bom::Checking(mut matched) = self.bom else {
            return input;
        };
        for (i, &byte) in input.iter().enumerate() {
            if byte == BOM[usize::from(matched)] {
                matched += 1;
                if usize::from(matched) == BOM.len() {
                    self.bom = Bom::Done;
                    return &input[i + 1..];
                }
            } else {
                self.bom = Bom::Done;
                self.line.extend_from_slice(&BOM[..usize::from(matched)]);
                return &input[i..];
            }
        }
        self.bom = Bom::Checking(matched);
        &[]
    }

    /// The rest of the input after the line end at `end`; a CR as the last byte may be followed
    /// by the LF of the same line end in the next chunk.
    fn skip_line_end<'a>(&mut self, input: &'a [u8], end: usize) -> &'a [u8] {
        if input[end] == b'\r' {
            match input.get(end + 1) {
                Some(b'\n') => return &input[end + 2..],
                None => self.after_cr = true,
                Some(_) => {}
            }
        }
        &input[end + 1..]
    }

    /// The bytes held for the event being assembled.
    fn held(&self) -> usize {
        self.data.len() + self.event_type.len() + self.id_buffer.len()
    }

    /// Fails if a line of `line_len` bytes would not fit beside the event being assembled.
    fn check_line(&self, line_len: usize) -> Result<(), ParseError> {
        if line_len.saturating_add(self.held()) > self.max_buffer {
            Err(ParseError::TooLarge)
        } else {
            Ok(())
        }
    }

    /// Interprets one complete line (without its line end).
    fn process_line(&mut self, line: &[u8]) -> Result<(), ParseError> {
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                self.data.push_str(&decode(value));
                self.data.push('\n');
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(&decode(value));
            }
            // An id with a NUL is ignored.
            b"id" if memchr::memchr(0, value).is_none() => {
                self.id_buffer.clear();
                self.id_buffer.push_str(&decode(value));
            }
            // Only a non-empty run of ASCII digits is a delay; saturates rather than overflows.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let millis = value.iter().fold(0u64, |n, &d| {
                    n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                self.retry = Some(Duration::from_millis(millis));
            }
            _ => {}
        }
        // Invalid UTF-8 decodes to U+FFFD, which can take more bytes than it replaces.
        if self.held() > self.max_buffer {
            return Err(ParseError::TooLarge);
        }
        Ok(())
    }

    /// Dispatches the event being assembled (a blank line was read).
    fn dispatch(&mut self) {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        // Every data line appended a `\n`; the last one goes.
        self.data.pop();
        let event_type = (!self.event_type.is_empty()).then_some(self.event_type.as_str());
        self.queue.push(event_type, &self.data, &self.last_event_id);
        self.event_type.clear();
        self.data.clear();
    }
}

/// Dispatched events waiting for [`Parser::next_event`], packed into one buffer: per event a
/// flags byte, then the event type (if not `message`) and the last event ID (if it changed
/// since the event before), then the data, each as a varint length and its bytes.
#[derive(Debug, Default)]
struct Queue {
    bytes: Vec<u8>,
    /// Where the next event to take starts.
    start: usize,
    /// The last event ID as of the last event pushed.
    pushed_id: String,
    /// The last event ID as of the last event taken.
    taken_id: String,
}

/// The event has an event type other than `message`.
const HAS_TYPE: u8 = 1;
/// The last event ID changed since the event before.
const NEW_ID: u8 = 2;

/// A queue emptied with more than this much room gives it back.
const QUEUE_KEEP_BYTES: usize = 16 * 1024;

impl Queue {
    fn push(&mut self, event_type: Option<&str>, data: &str, last_event_id: &str) {
        let new_id = self.pushed_id != last_event_id;
        let mut flags = 0;
        if event_type.is_some() {
            flags |= HAS_TYPE;
        }
        if new_id {
            flags |= NEW_ID;
            self.pushed_id.clear();
            self.pushed_id.push_str(last_event_id);
        }
        self.bytes.push(flags);
        if let Some(event_type) = event_type {
            self.put(event_type);
        }
        if new_id {
            self.put(last_event_id);
        }
        self.put(data);
    }

    fn put(&mut self, text: &str) {
        let mut len = text.len();
        loop {
            let low = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                self.bytes.push(low);
                break;
            }
            self.bytes.push(low | 0x80);
        }
        self.bytes.extend_from_slice(text.as_bytes());
    }

    fn pop(&mut self) -> Option<MessageEvent> {
        let flags = *self.bytes.get(self.start)?;
        self.start += 1;
        let event = match flags & HAS_TYPE {
            0 => String::from("message"),
            _ => self.take_text(),
        };
        if flags & NEW_ID != 0 {
            self.taken_id = self.take_text();
        }
        let data = self.take_text();
        if self.start == self.bytes.len() {
            self.start = 0;
            if self.bytes.capacity() > QUEUE_KEEP_BYTES {
                self.bytes = Vec::new();
            } else {
                self.bytes.clear();
            }
        }
        Some(MessageEvent {
            event,
            data,
            last_event_id: self.taken_id.clone(),
        })
    }

    /// Takes a length-prefixed text that `put` wrote.
    fn take_text(&mut self) -> String {
        let mut len = 0usize;
        let mut shift = 0;
        while let Some(&byte) = self.bytes.get(self.start) {
            self.start += 1;
            len |= usize::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let end = self.start.saturating_add(len).min(self.bytes.len());
        let text = String::from_utf8_lossy(&self.bytes[self.start..end]).into_owned();
        self.start = end;
        text
    }
}

/// Decodes one line's bytes as UTF-8, replacing invalid sequences with U+FFFD exactly as the
/// decoding of the whole stream would (line ends and colons are ASCII, so never inside a
/// character).
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}
