//! [`Event`]: one Server-Sent Event, built field by field straight into its wire form.
//!
//! The encoding follows the WHATWG HTML "Server-sent events" section to the letter: every field
//! is written `name: value` with the space, text is split into one line per line (`\r\n`, `\r`
//! and `\n` each count as one break), and the event ends with one blank line. Field values that
//! could inject lines (`event`, `id`) are checked and rejected with an [`EventError`].

use std::{fmt, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};

/// How many bytes of field lines an event holds inside itself: enough for a typical token
/// (`id`, `event` and a few words of data), which is then built without any allocation.
const INLINE_CAPACITY: usize = 40;

/// Values shorter than this are scanned a byte at a time: a call to `memchr` costs more.
const SHORT_VALUE: usize = 16;

/// The smallest buffer an event allocates once its lines outgrow the inline room, so a typical
/// event needs at most one allocation however many builder calls it takes.
const MIN_CAPACITY: usize = 128;

/// The room `json_data` makes before serialising: a streamed JSON chunk (an LLM API's is about
/// 200 bytes) fits without regrowing the buffer.
#[cfg(feature = "json")]
const JSON_CAPACITY: usize = 256;

/// One Server-Sent Event, kept in its exact wire form.
///
/// Build it with [`Event::new`] and the builder methods, or from text with `Event::from`.
/// A second [`event`](Event::event), [`id`](Event::id) or [`retry`](Event::retry) call replaces
/// the earlier value; [`data`](Event::data) and [`comment`](Event::comment) add lines.
///
/// ```
/// use tower_sse::{Event, EventName};
///
/// const TOKEN: EventName = EventName::new("token"); // checked when the program is built
///
/// let id = 7.to_string(); // known only at run time: checked by `id`, with a typed error
/// let event = Event::new().event_name(TOKEN).id(id)?.data(" world");
/// assert_eq!(&event.to_bytes()[..], b"event: token\nid: 7\ndata:  world\n\n");
/// # Ok::<(), tower_sse::EventError>(())
/// ```
#[derive(Clone, Default)]
pub struct Event {
    /// The field lines so far, or the finished encoding when shared.
    lines: Lines,
    /// Which of the single-line fields (one bit per [`Slot`]) the lines hold, so that a later
    /// call looks for the line to replace only when there is one.
    fields: u8,
}

/// An event's lines: inside the event while they fit, on the heap beyond, or the finished
/// encoding shared by reference count between clones.
#[derive(Clone)]
enum Lines {
    /// Field lines, without the blank line that ends the event.
    Inline {
        len: usize,
        bytes: [u8; INLINE_CAPACITY],
    },
    /// Field lines, without the blank line that ends the event.
    Heap(Vec<u8>),
    /// The complete encoding, blank line included.
    Shared(Bytes),
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

/// Why an [`Event`] builder call refused its input; [`kind`](EventError::kind) says what was
/// wrong.
///
/// Nothing is written when an error is returned: an event can never carry a half-written field.
/// The error is one pointer wide, so a `Result<Event, EventError>` moves like the event alone:
/// the builder's fallible calls cost no more than its infallible ones.
///
/// ```
/// use tower_sse::{Event, EventErrorKind, EventField};
///
/// let from_a_client = "name\r\nevent: injected";
/// let err = Event::new().event(from_a_client).unwrap_err();
/// match *err.kind() {
///     EventErrorKind::InvalidCharacter { field, character, position } => {
///         assert_eq!((field, character, position), (EventField::Event, '\r', 4));
///     }
///     ref other => panic!("{other:?}"),
/// }
/// ```
pub struct EventError(Box<EventErrorKind>);

/// What an [`EventError`] is about.
#[derive(Debug)]
#[non_exhaustive]
pub enum EventErrorKind {
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
    /// The bytes given to [`Event::data_bytes`] are not UTF-8, which every event stream is.
    NotUtf8(std::str::Utf8Error),
    /// The value given to [`Event::json_data`] could not be serialised.
    #[cfg(feature = "json")]
    Json(serde_json::Error),
}

impl EventError {
    /// What was wrong with the input.
    pub fn kind(&self) -> &EventErrorKind {
        &self.0
    }

    /// What was wrong with the input, by value (to take a JSON error's `serde_json::Error`).
    pub fn into_kind(self) -> EventErrorKind {
        *self.0
    }
}

impl From<EventErrorKind> for EventError {
    #[cold]
    fn from(kind: EventErrorKind) -> Self {
        EventError(Box::new(kind))
    }
}

#[cfg(feature = "json")]
impl From<serde_json::Error> for EventError {
    #[cold]
    fn from(err: serde_json::Error) -> Self {
        EventErrorKind::Json(err).into()
    }
}

impl fmt::Debug for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EventError").field(&self.0).finish()
    }
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            EventErrorKind::InvalidCharacter {
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
            EventErrorKind::NotUtf8(err) => write!(f, "SSE `data` bytes are not UTF-8: {err}"),
            #[cfg(feature = "json")]
            EventErrorKind::Json(err) => {
                write!(f, "SSE `data` could not be serialised as JSON: {err}")
            }
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
        match self.kind() {
            #[cfg(feature = "json")]
            EventErrorKind::Json(err) => Some(err),
            EventErrorKind::NotUtf8(err) => Some(err),
            EventErrorKind::InvalidCharacter { .. } => None,
        }
    }
}

impl Event {
    /// An empty event; add fields with the builder methods.
    #[inline(always)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the text as data, one `data: ` line per line of it.
    ///
    /// `\r\n`, a lone `\r` and a lone `\n` each count as one line break, and a trailing break
    /// gives a last empty line, so any text reaches a client as it was sent (breaks as `\n`).
    /// Calling `data` again adds lines: `data("a").data("b")` is received as `"a\nb"`.
    #[inline(always)]
    pub fn data(mut self, text: impl AsRef<str>) -> Self {
        let text = text.as_ref().as_bytes();
        if !self.lines.push_short(b"data: ", text, is_break) {
            write_lines(self.lines_mut(0), b"data: ", text);
        }
        self
    }

    /// Adds UTF-8 bytes (a `Bytes`, a `&[u8]`, a `Vec<u8>`) as data, exactly as
    /// [`data`](Event::data) adds text.
    ///
    /// Fails with [`EventErrorKind::NotUtf8`], adding nothing, if they are not UTF-8: an event
    /// stream is UTF-8, and a client would turn the bytes into U+FFFD.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_sse::{Event, EventError, EventErrorKind};
    ///
    /// let event = Event::new().data_bytes(Bytes::from_static(b"caf\xC3\xA9"))?;
    /// assert_eq!(&event.to_bytes()[..], "data: café\n\n".as_bytes());
    /// let err = Event::new().data_bytes(b"\xFF").unwrap_err();
    /// assert!(matches!(err.kind(), EventErrorKind::NotUtf8(_)));
    /// # Ok::<(), EventError>(())
    /// ```
    pub fn data_bytes(self, bytes: impl AsRef<[u8]>) -> Result<Self, EventError> {
        let text = std::str::from_utf8(bytes.as_ref())
            .map_err(|err| EventError::from(EventErrorKind::NotUtf8(err)))?;
        Ok(self.data(text))
    }

    /// Starts writing data with `write!`, straight into the event; [`DataWriter::finish`] gives
    /// the event back. The text is split into `data: ` lines as [`data`](Event::data) splits it.
    pub fn data_writer(mut self) -> DataWriter {
        DataWriter {
            lines: self.lines.take_vec(MIN_CAPACITY),
            fields: self.fields,
            line_start: true,
            after_cr: false,
        }
    }

    /// Adds the text as a comment: one `: text` line per line of it (`:` alone for an empty
    /// line). Clients ignore comments; proxies see traffic.
    pub fn comment(mut self, text: impl AsRef<str>) -> Self {
        let text = text.as_ref().as_bytes();
        write_lines(self.lines_mut(0), b": ", text);
        self
    }

    /// Sets the `retry:` field: how long a disconnected client waits before reconnecting,
    /// written in whole milliseconds.
    pub fn retry(mut self, delay: Duration) -> Self {
        let millis = delay.as_millis().to_string();
        self.set_line(Slot::Retry, millis.as_bytes());
        self
    }

    /// Sets the event type (`event:`), which selects the listener a browser calls.
    ///
    /// Fails if the name holds a CR or LF, which would inject lines.
    #[inline(always)]
    pub fn event(mut self, name: impl AsRef<str>) -> Result<Self, EventError> {
        let name = name.as_ref();
        if !self.push_short_field(Slot::Event, name.as_bytes(), is_break) {
            check_value(EventField::Event, name, is_break)?;
            self.set_line(Slot::Event, name.as_bytes());
        }
        Ok(self)
    }

    /// Sets the event id (`id:`), which a reconnecting client sends back as `Last-Event-ID`.
    ///
    /// Fails if the id holds a CR or LF (line injection) or a NUL (browsers ignore such ids).
    #[inline(always)]
    pub fn id(mut self, id: impl AsRef<str>) -> Result<Self, EventError> {
        let id = id.as_ref();
        if !self.push_short_field(Slot::Id, id.as_bytes(), is_id_break) {
            check_value(EventField::Id, id, is_id_break)?;
            self.set_line(Slot::Id, id.as_bytes());
        }
        Ok(self)
    }

    /// Sets the event type from a name checked when it was made, so it cannot fail: the
    /// infallible [`event`](Event::event) for names known when the program is written.
    #[inline(always)]
    pub fn event_name(mut self, name: EventName) -> Self {
        self.set_line(Slot::Event, name.0.as_bytes());
        self
    }

    /// Sets the event id from an id checked when it was made, so it cannot fail: the
    /// infallible [`id`](Event::id) for ids known when the program is written.
    #[inline(always)]
    pub fn event_id(mut self, id: EventId) -> Self {
        self.set_line(Slot::Id, id.0.as_bytes());
        self
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
        let mut lines = self.lines_mut(0).take_vec(JSON_CAPACITY);
        let rollback = lines.len();
        lines.extend_from_slice(b"data: ");
        let json_start = lines.len();
        // Straight into the buffer: the serialiser's many small writes cost no line scanning.
        let result = serde_json::to_writer(&mut lines, value);
        if let Err(err) = result {
            lines.truncate(rollback);
            self.lines = Lines::Heap(lines);
            return Err(err.into());
        }
        if find_break(&lines[json_start..]).is_some() {
            // Compact JSON escapes line breaks in strings; only raw JSON can hold one. Such
            // text is rewritten as one `data: ` line per line.
            let json = lines.split_off(json_start);
            lines.truncate(rollback);
            self.lines = Lines::Heap(lines);
            write_lines(&mut self.lines, b"data: ", &json);
        } else {
            lines.push(b'\n');
            self.lines = Lines::Heap(lines);
        }
        Ok(self)
    }

    /// The exact wire form of the event, ending in the blank line that dispatches it.
    pub fn to_bytes(&self) -> Bytes {
        match &self.lines {
            Lines::Shared(bytes) => bytes.clone(),
            lines => finished(lines.as_slice()),
        }
    }

    /// The length of [`to_bytes`](Event::to_bytes), without encoding anything.
    #[inline(always)]
    pub fn encoded_len(&self) -> usize {
        self.lines.as_slice().len() + 1
    }

    /// Encodes the event once into an [`EncodedEvent`], whose clones share the bytes: for
    /// sending one event to many clients.
    pub fn encode(self) -> EncodedEvent {
        EncodedEvent {
            fields: self.fields,
            bytes: self.into_bytes(),
        }
    }

    /// Turns the event into its finished encoding, shared by reference count, so that clones
    /// (one per subscriber of a broadcast, say) cost no copy.
    pub(crate) fn into_shared(self) -> Self {
        Event {
            fields: self.fields,
            lines: Lines::Shared(self.into_bytes()),
        }
    }

    /// The finished encoding, taking over the event's buffer where it can.
    pub(crate) fn into_bytes(self) -> Bytes {
        match self.lines {
            Lines::Shared(bytes) => bytes,
            Lines::Heap(mut lines) => {
                lines.push(b'\n');
                Bytes::from(lines)
            }
            inline => finished(inline.as_slice()),
        }
    }

    /// Whether its lines are inside it: then it is never larger than the inline room.
    #[inline(always)]
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.lines, Lines::Inline { .. })
    }

    /// Appends the finished encoding to `out` (how bodies coalesce small events into a frame).
    #[inline(always)]
    pub(crate) fn write_to(&self, out: &mut BytesMut) {
        if let Lines::Inline { len, bytes } = &self.lines {
            // The whole inline room, a copy of fixed size (no call), cut back to the lines
            // and the blank line that ends the event.
            let (start, len) = (out.len(), *len);
            out.extend_from_slice(bytes);
            match out.get_mut(start + len) {
                Some(end) => {
                    *end = b'\n';
                    out.truncate(start + len + 1);
                }
                None => out.put_u8(b'\n'),
            }
            return;
        }
        let lines = self.lines.as_slice();
        out.reserve(lines.len() + 1);
        out.extend_from_slice(lines);
        out.put_u8(b'\n');
    }

    /// The line buffer, ready for at least `additional` more bytes.
    #[inline(always)]
    fn lines_mut(&mut self, additional: usize) -> &mut Lines {
        self.lines.reserve(additional);
        &mut self.lines
    }

    /// Writes a single-line field set for the first time with a short value that `bad`
    /// accepts, through [`Lines::push_short`]; whether it did.
    #[inline(always)]
    fn push_short_field(&mut self, slot: Slot, value: &[u8], bad: impl Fn(u8) -> bool) -> bool {
        if self.fields & slot.bit() != 0 || !self.lines.push_short(slot.prefix(), value, bad) {
            return false;
        }
        self.fields |= slot.bit();
        true
    }

    /// Writes a single-line field, replacing its earlier line if there was one.
    #[inline(always)]
    fn set_line(&mut self, slot: Slot, value: &[u8]) {
        let replace = self.fields & slot.bit() != 0;
        self.fields |= slot.bit();
        let prefix = slot.prefix();
        let lines = self.lines_mut(prefix.len() + value.len() + 1);
        if replace {
            lines.remove_line(prefix);
        }
        lines.push_line(prefix, value);
    }
}

/// The single-line fields whose later value replaces the earlier one.
#[derive(Clone, Copy)]
enum Slot {
    Event,
    Id,
    Retry,
}

impl Slot {
    fn prefix(self) -> &'static [u8] {
        match self {
            Slot::Event => b"event: ",
            Slot::Id => b"id: ",
            Slot::Retry => b"retry: ",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl Default for Lines {
    #[inline(always)]
    fn default() -> Self {
        Lines::Inline {
            len: 0,
            bytes: [0; INLINE_CAPACITY],
        }
    }
}

impl Lines {
    /// The field lines, without the blank line that ends the event.
    #[inline(always)]
    fn as_slice(&self) -> &[u8] {
        match self {
            Lines::Inline { len, bytes } => &bytes[..*len],
            Lines::Heap(lines) => lines,
            Lines::Shared(bytes) => &bytes[..bytes.len().saturating_sub(1)],
        }
    }

    /// Makes room for `additional` more bytes, moving to the heap when the event cannot hold
    /// them (a shared encoding is copied back into lines that can grow).
    #[inline(always)]
    fn reserve(&mut self, additional: usize) {
        match self {
            Lines::Heap(lines) => lines.reserve(additional),
            Lines::Inline { len, .. } if *len + additional <= INLINE_CAPACITY => {}
            Lines::Inline { .. } | Lines::Shared(_) => {
                *self = Lines::Heap(self.take_vec(additional))
            }
        }
    }

    /// Takes the lines out as a heap buffer with room for `additional` more bytes.
    fn take_vec(&mut self, additional: usize) -> Vec<u8> {
        match std::mem::take(self) {
            Lines::Heap(mut lines) => {
                lines.reserve(additional);
                lines
            }
            other => {
                let lines = other.as_slice();
                let mut heap = Vec::with_capacity((lines.len() + additional).max(MIN_CAPACITY));
                heap.extend_from_slice(lines);
                heap
            }
        }
    }

    /// Appends the line `prefix` `value` and the LF that ends it.
    #[inline(always)]
    fn push_line(&mut self, prefix: &[u8], value: &[u8]) {
        let line = prefix.len() + value.len() + 1;
        match self {
            Lines::Heap(lines) => return append_line(lines, prefix, value),
            Lines::Shared(_) => {}
            Lines::Inline { len, bytes } => {
                let start = *len;
                if let Some(room) = bytes.get_mut(start..start + line) {
                    let (head, tail) = room.split_at_mut(prefix.len());
                    let (middle, lf) = tail.split_at_mut(value.len());
                    head.copy_from_slice(prefix);
                    middle.copy_from_slice(value);
                    lf.fill(b'\n');
                    *len = start + line;
                    return;
                }
            }
        }
        let mut lines = self.take_vec(line);
        append_line(&mut lines, prefix, value);
        *self = Lines::Heap(lines);
    }

    /// Appends the line `prefix` `value` when the value is short, fits inside the event and
    /// holds no byte `bad` refuses (the usual token, id or event type); whether it did. The
    /// value is copied and checked in one pass with no call, and counts only once `len` covers
    /// it; anything else is left to the general path, which also reports what is wrong. An
    /// empty value gives the prefix alone, which is right for `data: `, `id: ` and `event: `.
    #[inline(always)]
    fn push_short(&mut self, prefix: &[u8], value: &[u8], bad: impl Fn(u8) -> bool) -> bool {
        let Lines::Inline { len, bytes } = self else {
            return false;
        };
        if value.len() >= SHORT_VALUE {
            return false;
        }
        let start = *len;
        let end = start + prefix.len() + value.len() + 1;
        let Some(room) = bytes.get_mut(start..end) else {
            return false;
        };
        let (head, tail) = room.split_at_mut(prefix.len());
        let (middle, lf) = tail.split_at_mut(value.len());
        for (at, &byte) in value.iter().enumerate() {
            if bad(byte) {
                return false;
            }
            middle[at] = byte;
        }
        head.copy_from_slice(prefix);
        lf.fill(b'\n');
        *len = end;
        true
    }

    /// Removes the line that starts with `prefix`, if there is one.
    #[cold]
    fn remove_line(&mut self, prefix: &[u8]) {
        let lines = self.as_slice();
        let Some(start) = find_line(lines, prefix) else {
            return;
        };
        let end = memchr::memchr(b'\n', &lines[start..]).map_or(lines.len(), |i| start + i + 1);
        if let Lines::Inline { len, bytes } = self {
            bytes.copy_within(end..*len, start);
            *len -= end - start;
        } else {
            let mut lines = self.take_vec(0);
            lines.drain(start..end);
            *self = Lines::Heap(lines);
        }
    }
}

fn append_line(lines: &mut Vec<u8>, prefix: &[u8], value: &[u8]) {
    lines.reserve(prefix.len() + value.len() + 1);
    lines.extend_from_slice(prefix);
    lines.extend_from_slice(value);
    lines.push(b'\n');
}

/// The finished encoding of `lines`: a copy with the blank line that ends the event.
fn finished(lines: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(lines.len() + 1);
    out.extend_from_slice(lines);
    out.push(b'\n');
    Bytes::from(out)
}

/// A byte that ends a line: a data or comment value is split there, and an event type may not
/// hold it.
#[inline(always)]
fn is_break(byte: u8) -> bool {
    byte == b'\r' || byte == b'\n'
}

/// A byte an id may not hold: a line break, or a NUL (browsers ignore such ids).
#[inline(always)]
fn is_id_break(byte: u8) -> bool {
    matches!(byte, b'\r' | b'\n' | 0)
}

fn check_value(field: EventField, value: &str, bad: impl Fn(u8) -> bool) -> Result<(), EventError> {
    match value.bytes().position(bad) {
        None => Ok(()),
        Some(position) => Err(EventErrorKind::InvalidCharacter {
            field,
            character: char::from(value.as_bytes()[position]),
            position,
        }
        .into()),
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

/// Where the first CR or LF of `text` is. Short texts (a token, a word) are scanned in place:
/// below a few dozen bytes the vectorised search costs more to set up than it saves.
#[inline(always)]
fn find_break(text: &[u8]) -> Option<usize> {
    if text.len() < SHORT_VALUE {
        text.iter().position(|&b| is_break(b))
    } else {
        memchr::memchr2(b'\r', b'\n', text)
    }
}

/// Writes `text` as lines that start with `prefix`, one per line of the text: `\r\n`, a lone
/// `\r` and a lone `\n` each end a line, so a trailing break gives a last empty line. An empty
/// line is the prefix alone, trimmed of its space for comments (`:`) and kept for data
/// (`data: `), as the wire rules say.
#[inline(always)]
fn write_lines(lines: &mut Lines, prefix: &[u8], text: &[u8]) {
    // Room for all of it at once: each break becomes a line end and adds a prefix; the last
    // line end and the blank line that closes the event come on top. A single line (the
    // common case) is scanned only once.
    let mut found = find_break(text);
    let breaks = found.map_or(0, |at| {
        let rest = &text[at + 1..];
        1 + memchr::memchr_iter(b'\n', rest).count() + memchr::memchr_iter(b'\r', rest).count()
    });
    lines.reserve(text.len() + (breaks + 1) * prefix.len() + 2);
    let empty_line: &[u8] = if prefix == b": " { b":" } else { prefix };
    let mut rest = text;
    loop {
        let (line, next) = match found {
            Some(at) => {
                let crlf = rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n');
                (&rest[..at], Some(&rest[at + 1 + usize::from(crlf)..]))
            }
            None => (rest, None),
        };
        if line.is_empty() {
            lines.push_line(empty_line, b"");
        } else {
            lines.push_line(prefix, line);
        }
        match next {
            Some(next) => {
                rest = next;
                found = find_break(rest);
            }
            None => return,
        }
    }
}

/// An event type known when the program is written, checked once: [`Event::event_name`] then
/// sets it without a `Result`.
///
/// Define it in a `const`, so that a name that would inject lines fails the build:
///
/// ```
/// use tower_sse::{Event, EventName};
///
/// const TOKEN: EventName = EventName::new("token");
///
/// let event = Event::new().event_name(TOKEN).data("Hel");
/// assert_eq!(&event.to_bytes()[..], b"event: token\ndata: Hel\n\n");
/// ```
///
/// ```compile_fail
/// # use tower_sse::EventName;
/// const BROKEN: EventName = EventName::new("a\nb"); // error: evaluation of constant failed
/// ```
///
/// Names only known at run time go through [`Event::event`], which returns the typed
/// [`EventError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventName(&'static str);

impl EventName {
    /// The name, checked: it panics on a CR or LF, which in a `const` is a build error.
    pub const fn new(name: &'static str) -> Self {
        assert!(
            const_position(name.as_bytes(), false).is_none(),
            "an SSE event name cannot hold a CR or LF"
        );
        EventName(name)
    }

    /// The name as text.
    pub const fn as_str(&self) -> &'static str {
        self.0
    }
}

/// An event id known when the program is written, checked once: [`Event::event_id`] then sets
/// it without a `Result`.
///
/// ```
/// use tower_sse::{Event, EventId};
///
/// const WELCOME: EventId = EventId::new("welcome-1");
///
/// let event = Event::new().event_id(WELCOME).data("hi");
/// assert_eq!(&event.to_bytes()[..], b"id: welcome-1\ndata: hi\n\n");
/// ```
///
/// ```compile_fail
/// # use tower_sse::EventId;
/// const BROKEN: EventId = EventId::new("a\0b"); // error: evaluation of constant failed
/// ```
///
/// Ids only known at run time go through [`Event::id`], which returns the typed
/// [`EventError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId(&'static str);

impl EventId {
    /// The id, checked: it panics on a CR, LF or NUL, which in a `const` is a build error.
    pub const fn new(id: &'static str) -> Self {
        assert!(
            const_position(id.as_bytes(), true).is_none(),
            "an SSE event id cannot hold a CR, LF or NUL"
        );
        EventId(id)
    }

    /// The id as text.
    pub const fn as_str(&self) -> &'static str {
        self.0
    }
}

/// Where the first CR or LF (and NUL, with `nul`) of `value` is, in a form `const fn` accepts.
const fn const_position(value: &[u8], nul: bool) -> Option<usize> {
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'\r' || b == b'\n' || (nul && b == 0) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Writes an event's data with `write!`, straight into the event: no `String` in between.
///
/// Made by [`Event::data_writer`]; [`finish`](DataWriter::finish) gives the event back. The text
/// is split into `data: ` lines exactly as [`Event::data`] splits it, even where a line break
/// falls across two writes (`\r` in one, `\n` in the next is one break).
///
/// ```
/// use std::fmt::Write;
/// use tower_sse::Event;
///
/// let mut writer = Event::new().data_writer();
/// write!(writer, "{} of {}", 3, 10)?;
/// writeln!(writer)?;
/// write!(writer, "done")?;
/// let event = writer.finish();
/// assert_eq!(&event.to_bytes()[..], b"data: 3 of 10\ndata: done\n\n");
/// # Ok::<(), std::fmt::Error>(())
/// ```
pub struct DataWriter {
    /// The event's line buffer while it is being written to.
    lines: Vec<u8>,
    fields: u8,
    /// Whether the next byte starts a new `data: ` line.
    line_start: bool,
    /// Whether the last byte written was a CR, so that an LF right after it is the same break.
    after_cr: bool,
}

impl fmt::Write for DataWriter {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text.as_bytes();
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while !rest.is_empty() {
            let (line, brk) = match find_break(rest) {
                Some(at) => (&rest[..at], Some(rest[at])),
                None => (rest, None),
            };
            if self.line_start {
                self.lines.extend_from_slice(b"data: ");
                self.line_start = false;
            }
            self.lines.extend_from_slice(line);
            let Some(brk) = brk else { break };
            self.lines.push(b'\n');
            self.line_start = true;
            rest = &rest[line.len() + 1..];
            if brk == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        Ok(())
    }
}

impl DataWriter {
    /// Ends the data and gives the event back, with the data lines added.
    pub fn finish(mut self) -> Event {
        if self.line_start {
            // An empty text, or one that ended in a break, ends with an empty data line.
            self.lines.extend_from_slice(b"data: ");
        }
        self.lines.push(b'\n');
        Event {
            lines: Lines::Heap(self.lines),
            fields: self.fields,
        }
    }
}

impl fmt::Debug for DataWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataWriter")
            .field("lines", &String::from_utf8_lossy(&self.lines))
            .finish_non_exhaustive()
    }
}

/// An event encoded once, cheap to clone: for fanning one event out to many clients through
/// channels of your own, each clone shares the same bytes by reference count.
///
/// Make it with [`Event::encode`] (or `EncodedEvent::from(event)`), clone it per subscriber,
/// and send it wherever an [`Event`] goes: `Event::from(encoded)` takes no copy.
///
/// ```
/// use tower_sse::{EncodedEvent, Event};
///
/// let encoded: EncodedEvent = Event::new().data("to everyone").encode();
/// let subscribers: Vec<Event> = (0..3).map(|_| Event::from(encoded.clone())).collect();
/// assert_eq!(&subscribers[2].to_bytes()[..], b"data: to everyone\n\n");
/// assert_eq!(encoded.as_bytes().as_ptr(), subscribers[2].to_bytes().as_ptr()); // no copy
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EncodedEvent {
    /// The complete wire form, blank line included.
    bytes: Bytes,
    /// The single-line fields it holds, so that an event made from it replaces them.
    fields: u8,
}

impl EncodedEvent {
    /// The wire form, ending in the blank line that dispatches it.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The wire form, taken out.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl From<Event> for EncodedEvent {
    fn from(event: Event) -> Self {
        event.encode()
    }
}

impl From<EncodedEvent> for Event {
    /// The event, sharing the encoding: no copy.
    fn from(encoded: EncodedEvent) -> Self {
        Event {
            lines: Lines::Shared(encoded.bytes),
            fields: encoded.fields,
        }
    }
}

impl fmt::Debug for EncodedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EncodedEvent")
            .field(&String::from_utf8_lossy(&self.bytes))
            .finish()
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
