//! [`Event`]: one Server-Sent Event, built field by field straight into its wire form.
//!
//! The encoding follows the WHATWG HTML "Server-sent events" section to the letter: every field
//! is written `name: value` with the space, text is split into one line per line (`\r\n`, `\r`
//! and `\n` each count as one break), and the event ends with one blank line. Field values that
//! could inject lines (`event`, `id`) are checked and rejected with an [`EventError`].

use std::{fmt, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};

/// The smallest buffer an event allocates, so a typical small event needs exactly one allocation
/// however many builder calls it takes.
const MIN_CAPACITY: usize = 64;

/// One Server-Sent Event, kept in its exact wire form.
///
/// Build it with [`Event::new`] and the builder methods, or from text with `Event::from`.
/// A second [`event`](Event::event), [`id`](Event::id) or [`retry`](Event::retry) call replaces
/// the earlier value; [`data`](Event::data) and [`comment`](Event::comment) add lines.
///
/// ```
/// use tower_sse::Event;
///
/// let event = Event::new().event("token")?.id("7")?.data(" world");
/// assert_eq!(&event.to_bytes()[..], b"event: token\nid: 7\ndata:  world\n\n");
/// # Ok::<(), tower_sse::EventError>(())
/// ```
#[derive(Clone, Default)]
pub struct Event {
    /// The field lines so far, without the blank line that ends the event; empty while the
    /// event is `shared`.
    lines: Vec<u8>,
    /// The complete encoding, blank line included, shared by reference count between clones.
    shared: Option<Bytes>,
    /// Byte offsets in the wire lines where the `event:`, `id:` and `retry:` lines start,
    /// so that a later call can replace the line.
    event_at: Option<usize>,
    id_at: Option<usize>,
    retry_at: Option<usize>,
}

/// Which field of an [`Event`] an [`EventError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventField {
    /// The event type, written as `event:`.
    Event,
    /// The event id, written as `id:`.
    Id,
}

impl EventField {
    fn name(self) -> &'static str {
        match self {
            EventField::Event => "event",
            EventField::Id => "id",
        }
    }
}

/// Why an [`Event`] builder call refused its input.
///
/// Nothing is written when an error is returned: an event can never carry a half-written field.
#[derive(Debug)]
#[non_exhaustive]
pub enum EventError {
    /// The value holds a character that would end the line early (CR or LF), or that browsers
    /// reject in an id (NUL), so writing it would inject lines into the stream.
    InvalidCharacter {
        /// The field the value was meant for.
        field: EventField,
        /// The offending character.
        character: char,
        /// Its byte offset in the value.
        position: usize,
    },
    /// The value given to [`Event::json_data`] could not be serialised.
    #[cfg(feature = "json")]
    Json(serde_json::Error),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventError::InvalidCharacter {
                field,
                character,
                position,
            } => write!(
                f,
                "SSE `{}` field value contains {} at byte {}; it would break the line",
                field.name(),
                character_name(*character),
                position
            ),
            #[cfg(feature = "json")]
            EventError::Json(err) => write!(f, "SSE `data` could not be serialised as JSON: {err}"),
        }
    }
}

fn character_name(c: char) -> &'static str {
    match c {
        '\r' => "a carriage return (U+000D)",
        '\n' => "a line feed (U+000A)",
        _ => "a NUL (U+0000)",
    }
}

impl std::error::Error for EventError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "json")]
            EventError::Json(err) => Some(err),
            EventError::InvalidCharacter { .. } => None,
        }
    }
}

impl Event {
    /// An empty event; add fields with the builder methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the text as data, one `data: ` line per line of it.
    ///
    /// `\r\n`, a lone `\r` and a lone `\n` each count as one line break, and a trailing break
    /// gives a last empty line, so any text reaches a client as it was sent (breaks as `\n`).
    /// Calling `data` again adds lines: `data("a").data("b")` is received as `"a\nb"`.
    pub fn data(mut self, text: impl AsRef<str>) -> Self {
        let text = text.as_ref().as_bytes();
        let buf = self.lines_mut(text.len() + 8);
        let mut writer = LineWriter::start(buf, b"data: ");
        writer.write(text);
        writer.finish();
        self
    }

    /// Adds the text as a comment: one `: text` line per line of it (`:` alone for an empty
    /// line). Clients ignore comments; proxies see traffic.
    pub fn comment(mut self, text: impl AsRef<str>) -> Self {
        let text = text.as_ref().as_bytes();
        let buf = self.lines_mut(text.len() + 4);
        let mut writer = LineWriter::start(buf, b": ");
        writer.write(text);
        writer.finish();
        self
    }

    /// Sets the `retry:` field: how long a disconnected client waits before reconnecting,
    /// written in whole milliseconds.
    pub fn retry(mut self, delay: Duration) -> Self {
        let millis = delay.as_millis().to_string();
        self.set_line(Slot::Retry, b"retry: ", millis.as_bytes());
        self
    }

    /// Sets the event type (`event:`), which selects the listener a browser calls.
    ///
    /// Fails if the name holds a CR or LF, which would inject lines.
    pub fn event(mut self, name: impl AsRef<str>) -> Result<Self, EventError> {
        let name = name.as_ref();
        check_value(EventField::Event, name, |b| b == b'\r' || b == b'\n')?;
        self.set_line(Slot::Event, b"event: ", name.as_bytes());
        Ok(self)
    }

    /// Sets the event id (`id:`), which a reconnecting client sends back as `Last-Event-ID`.
    ///
    /// Fails if the id holds a CR or LF (line injection) or a NUL (browsers ignore such ids).
    pub fn id(mut self, id: impl AsRef<str>) -> Result<Self, EventError> {
        let id = id.as_ref();
        check_value(EventField::Id, id, |b| matches!(b, b'\r' | b'\n' | 0))?;
        self.set_line(Slot::Id, b"id: ", id.as_bytes());
        Ok(self)
    }

    /// Adds the value serialised as JSON as data, written straight into the event.
    ///
    /// Compact JSON has no line breaks, but a value may still carry raw ones (a
    /// `serde_json::value::RawValue` holding pretty-printed JSON): they are split into `data: `
    /// lines like any text, so the event stays one event and the client gets the JSON back.
    /// On error nothing is added.
    #[cfg(feature = "json")]
    pub fn json_data<T: serde::Serialize + ?Sized>(
        mut self,
        value: &T,
    ) -> Result<Self, EventError> {
        let buf = self.lines_mut(MIN_CAPACITY);
        let rollback = buf.len();
        let mut writer = LineWriter::start(buf, b"data: ");
        match serde_json::to_writer(&mut writer, value) {
            Ok(()) => {
                writer.finish();
                Ok(self)
            }
            Err(err) => {
                writer.buf.truncate(rollback);
                Err(EventError::Json(err))
            }
        }
    }

    /// The exact wire form of the event, ending in the blank line that dispatches it.
    pub fn to_bytes(&self) -> Bytes {
        match &self.shared {
            Some(bytes) => bytes.clone(),
            None => {
                let mut out = Vec::with_capacity(self.lines.len() + 1);
                out.extend_from_slice(&self.lines);
                out.push(b'\n');
                Bytes::from(out)
            }
        }
    }

    /// The length of [`to_bytes`](Event::to_bytes), without encoding anything.
    pub fn encoded_len(&self) -> usize {
        match &self.shared {
            Some(bytes) => bytes.len(),
            None => self.lines.len() + 1,
        }
    }

    /// Turns the event into its finished encoding, shared by reference count, so that clones
    /// (one per subscriber of a broadcast, say) cost no copy.
    pub(crate) fn into_shared(self) -> Self {
        Event {
            shared: Some(self.into_bytes()),
            ..Event::default()
        }
    }

    /// The finished encoding, taking over the event's buffer where it can.
    pub(crate) fn into_bytes(self) -> Bytes {
        match self.shared {
            Some(bytes) => bytes,
            None => {
                let mut lines = self.lines;
                lines.push(b'\n');
                Bytes::from(lines)
            }
        }
    }

    /// Appends the finished encoding to `out` (how bodies coalesce small events into a frame).
    pub(crate) fn write_to(&self, out: &mut BytesMut) {
        match &self.shared {
            Some(bytes) => out.extend_from_slice(bytes),
            None => {
                out.reserve(self.lines.len() + 1);
                out.extend_from_slice(&self.lines);
                out.put_u8(b'\n');
            }
        }
    }

    /// The line buffer, ready for at least `additional` more bytes; a shared encoding is
    /// copied back into lines first.
    fn lines_mut(&mut self, additional: usize) -> &mut Vec<u8> {
        if let Some(bytes) = self.shared.take() {
            self.lines = bytes[..bytes.len().saturating_sub(1)].to_vec();
            self.event_at = find_line(&self.lines, b"event: ");
            self.id_at = find_line(&self.lines, b"id: ");
            self.retry_at = find_line(&self.lines, b"retry: ");
        }
        if self.lines.capacity() == 0 {
            self.lines.reserve(additional.max(MIN_CAPACITY));
        } else {
            self.lines.reserve(additional);
        }
        &mut self.lines
    }

    /// Writes a single-line field, replacing its earlier line if there was one.
    fn set_line(&mut self, slot: Slot, prefix: &[u8], value: &[u8]) {
        self.lines_mut(prefix.len() + value.len() + 1);
        if let Some(start) = self.slot(slot).take() {
            let end = memchr::memchr(b'\n', &self.lines[start..])
                .map_or(self.lines.len(), |i| start + i + 1);
            self.lines.drain(start..end);
            for at in [&mut self.event_at, &mut self.id_at, &mut self.retry_at]
                .into_iter()
                .flatten()
            {
                if *at > start {
                    *at -= end - start;
                }
            }
        }
        *self.slot(slot) = Some(self.lines.len());
        self.lines.extend_from_slice(prefix);
        self.lines.extend_from_slice(value);
        self.lines.push(b'\n');
    }

    fn slot(&mut self, slot: Slot) -> &mut Option<usize> {
        match slot {
            Slot::Event => &mut self.event_at,
            Slot::Id => &mut self.id_at,
            Slot::Retry => &mut self.retry_at,
        }
    }
}

/// The single-line fields whose later value replaces the earlier one.
#[derive(Clone, Copy)]
enum Slot {
    Event,
    Id,
    Retry,
}

fn check_value(field: EventField, value: &str, bad: impl Fn(u8) -> bool) -> Result<(), EventError> {
    match value.bytes().position(bad) {
        None => Ok(()),
        Some(position) => Err(EventError::InvalidCharacter {
            field,
            character: char::from(value.as_bytes()[position]),
            position,
        }),
    }
}

/// Where a line starting with `prefix` begins in wire lines that this module wrote.
fn find_line(lines: &[u8], prefix: &[u8]) -> Option<usize> {
    let mut start = 0;
    while start < lines.len() {
        if lines[start..].starts_with(prefix) {
            return Some(start);
        }
        start += memchr::memchr(b'\n', &lines[start..])? + 1;
    }
    None
}

/// Writes text as prefixed lines, one per line of the text, however the text arrives in pieces.
///
/// A CR at the end of one piece followed by an LF at the start of the next is one break, so
/// serialisers that write in small pieces get the same lines as one `write` of the whole.
struct LineWriter<'a> {
    buf: &'a mut Vec<u8>,
    prefix: &'static [u8],
    /// The last byte written was a CR: an LF right after it belongs to the same break.
    after_cr: bool,
    /// Nothing has been written on the current line yet.
    line_empty: bool,
}

impl<'a> LineWriter<'a> {
    fn start(buf: &'a mut Vec<u8>, prefix: &'static [u8]) -> Self {
        LineWriter {
            buf,
            prefix,
            after_cr: false,
            line_empty: true,
        }
    }

    fn write(&mut self, mut text: &[u8]) {
        if text.is_empty() {
            return;
        }
        if std::mem::take(&mut self.after_cr) && text[0] == b'\n' {
            text = &text[1..];
        }
        while let Some(at) = memchr::memchr2(b'\r', b'\n', text) {
            self.write_part(&text[..at]);
            self.end_line();
            if text[at] == b'\r' {
                if text.get(at + 1) == Some(&b'\n') {
                    text = &text[at + 2..];
                } else if at + 1 == text.len() {
                    self.after_cr = true;
                    return;
                } else {
                    text = &text[at + 1..];
                }
            } else {
                text = &text[at + 1..];
            }
        }
        self.write_part(text);
    }

    fn write_part(&mut self, part: &[u8]) {
        if part.is_empty() {
            return;
        }
        if self.line_empty {
            self.buf.extend_from_slice(self.prefix);
            self.line_empty = false;
        }
        self.buf.extend_from_slice(part);
    }

    /// Ends the current line; an empty one is the prefix alone, trimmed of its space for
    /// comments (`:`) and kept for data (`data: `), as the wire rules say.
    fn end_line(&mut self) {
        if self.line_empty {
            if self.prefix == b": " {
                self.buf.push(b':');
            } else {
                self.buf.extend_from_slice(self.prefix);
            }
        }
        self.buf.push(b'\n');
        self.line_empty = true;
    }

    fn finish(mut self) {
        self.end_line();
    }
}

#[cfg(feature = "json")]
impl std::io::Write for LineWriter<'_> {
    fn write(&mut self, piece: &[u8]) -> std::io::Result<usize> {
        LineWriter::write(self, piece);
        Ok(piece.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl From<&str> for Event {
    /// An event whose data is the text: `Event::new().data(text)`.
    fn from(text: &str) -> Self {
        Event::new().data(text)
    }
}

impl From<String> for Event {
    /// An event whose data is the text: `Event::new().data(text)`.
    fn from(text: String) -> Self {
        Event::new().data(text)
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Event")
            .field(&String::from_utf8_lossy(&self.to_bytes()))
            .finish()
    }
}

impl PartialEq for Event {
    /// Two events are equal when their wire forms are.
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Eq for Event {}
