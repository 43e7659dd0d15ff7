//! Resuming streams: the [`LastEventId`] a reconnecting client sends, and the [`ReplayLog`] of
//! recent events that lets it pick up strictly after that id.
//!
//! A browser's `EventSource` reconnects by itself and sends the id of the last event it got in
//! a `Last-Event-ID` header. A server that numbers its events and keeps the latest ones can
//! then send exactly what the client missed: nothing lost, nothing repeated.

use std::{collections::VecDeque, fmt, iter::FusedIterator};

use http::HeaderMap;

use crate::Event;

/// The id of the last event a client received, as sent back in the `Last-Event-ID` header
/// when it reconnects.
///
/// It is any UTF-8 text without NUL, CR or LF: exactly what an `id:` field can carry.
///
/// ```
/// use http::HeaderMap;
/// use tower_sse::LastEventId;
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(LastEventId::from_headers(&headers)?, None);
/// headers.insert("last-event-id", "42".parse().unwrap());
/// let id = LastEventId::from_headers(&headers)?.unwrap();
/// assert_eq!(id.as_str(), "42");
/// # Ok::<(), tower_sse::LastEventIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LastEventId(Box<str>);

impl LastEventId {
    /// The header a reconnecting client sends the id in.
    pub const HEADER: &'static str = "last-event-id";

    /// Checks an id: it must not hold NUL, CR or LF, which no `id:` field can carry.
    ///
    /// Use it for ids that arrive another way than the header (a query parameter, say).
    pub fn new(id: impl Into<String>) -> Result<Self, LastEventIdError> {
        let id = id.into();
        match id.bytes().position(|b| matches!(b, b'\0' | b'\r' | b'\n')) {
            Some(position) => Err(LastEventIdError::InvalidCharacter {
                character: char::from(id.as_bytes()[position]),
                position,
            }),
            None => Ok(LastEventId(id.into_boxed_str())),
        }
    }

    /// Reads the `Last-Event-ID` header: `None` when it is absent or empty (a client with no
    /// id sends none), an error when it is not valid UTF-8, holds NUL, CR or LF, or is sent
    /// more than once.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, LastEventIdError> {
        let mut values = headers.get_all(Self::HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(LastEventIdError::Repeated);
        }
        let text =
            std::str::from_utf8(value.as_bytes()).map_err(|err| LastEventIdError::InvalidUtf8 {
                position: err.valid_up_to(),
            })?;
        if text.is_empty() {
            return Ok(None);
        }
        Self::new(text).map(Some)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a number, if it is one in canonical decimal form (no sign, no leading zero),
    /// as [`ReplayLog`] writes them.
    pub fn as_u64(&self) -> Option<u64> {
        let text = self.as_str();
        let canonical =
            text.bytes().all(|b| b.is_ascii_digit()) && !(text.len() > 1 && text.starts_with('0'));
        if canonical {
            text.parse().ok()
        } else {
            None
        }
    }
}

impl AsRef<str> for LastEventId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for LastEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for LastEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LastEventId").field(&self.as_str()).finish()
    }
}

impl std::str::FromStr for LastEventId {
    type Err = LastEventIdError;

    /// Same as [`LastEventId::new`].
    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Self::new(id)
    }
}

/// Why a `Last-Event-ID` could not be read. Servers answer it with `400 Bad Request`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LastEventIdError {
    /// The header value is not valid UTF-8.
    InvalidUtf8 {
        /// The byte offset of the first invalid byte.
        position: usize,
    },
    /// The id holds NUL, CR or LF, which no event id can carry.
    InvalidCharacter {
        /// The offending character.
        character: char,
        /// Its byte offset in the id.
        position: usize,
    },
    /// The header was sent more than once, so the id is ambiguous.
    Repeated,
    /// The header is absent where a handler requires it (only the axum extractor for a
    /// required `LastEventId` reports this).
    Missing,
}

impl fmt::Display for LastEventIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LastEventIdError::InvalidUtf8 { position } => {
                write!(f, "Last-Event-ID is not valid UTF-8 (byte {position})")
            }
            LastEventIdError::InvalidCharacter {
                character,
                position,
            } => write!(
                f,
                "Last-Event-ID holds {} at byte {position}",
                match character {
                    '\r' => "a carriage return",
                    '\n' => "a line feed",
                    _ => "a NUL",
                }
            ),
            LastEventIdError::Repeated => f.write_str("Last-Event-ID was sent more than once"),
            LastEventIdError::Missing => f.write_str("Last-Event-ID header is required"),
        }
    }
}

impl std::error::Error for LastEventIdError {}

/// Why a [`ReplayLog`] cannot resume after a given id: the handler decides what to do (send a
/// "resync" event and go live, answer `204 No Content` so a browser stops reconnecting, or
/// send the full state).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    /// Events after the id were already evicted, so some are lost for this client.
    Evicted {
        /// The id the client sent.
        last: u64,
        /// The oldest id the log still holds.
        first_retained: u64,
    },
    /// The log never issued this id: it is not a canonical decimal number, or it is newer
    /// than the latest event (a client of an earlier server run, say).
    Unknown {
        /// The id the client sent.
        last: LastEventId,
    },
}

impl ReplayError {
    /// How many events the client missed for good (0 when the id is unknown).
    pub fn missed(&self) -> u64 {
        match self {
            ReplayError::Evicted {
                last,
                first_retained,
            } => first_retained.saturating_sub(*last).saturating_sub(1),
            ReplayError::Unknown { .. } => 0,
        }
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Evicted {
                last,
                first_retained,
            } => write!(
                f,
                "cannot resume after event {last}: the oldest retained event is {first_retained}"
            ),
            ReplayError::Unknown { last } => {
                write!(f, "event id {:?} was never issued", last.as_str())
            }
        }
    }
}

impl std::error::Error for ReplayError {}

/// A bounded, in-memory log of the latest events of one stream, numbering them as they come.
///
/// [`push`](ReplayLog::push) gives every event the next id (`1`, `2`, ... written as its `id:`
/// field) and encodes it once; [`after`](ReplayLog::after) yields the events strictly after a
/// client's [`LastEventId`]. The log keeps at most `max_events` events and, beyond the newest
/// one, at most `max_bytes` bytes of encoded events, dropping the oldest first.
///
/// The id `0` means "before the first event": resuming after it replays everything, as long as
/// nothing was evicted yet. For a live feed with many subscribers, a [`Hub`](crate::Hub) topic
/// holds a `ReplayLog` and resumes a subscriber atomically with going live.
///
/// ```
/// use tower_sse::{Event, LastEventId, ReplayLog};
///
/// let mut log = ReplayLog::new(100, 64 * 1024);
/// for text in ["a", "b", "c"] {
///     log.push(Event::from(text));
/// }
/// let last: LastEventId = "1".parse()?;
/// let replay: Vec<_> = log.after(&last)?.map(|event| event.to_bytes()).collect();
/// assert_eq!(replay, ["data: b\nid: 2\n\n", "data: c\nid: 3\n\n"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ReplayLog {
    events: VecDeque<Event>,
    /// The id the next event gets; the log holds ids `next_id - events.len() .. next_id`.
    next_id: u64,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

/// What a [`ReplayLog`] holds from an id on.
pub(crate) enum Entry<'a> {
    /// The event with this id, and up to a given number of the events after it.
    Retained(&'a Event, Replay<'a>),
    /// The event was evicted; the oldest retained one has this id.
    Evicted { first_retained: u64 },
    /// No event has this id yet.
    Future,
}

impl ReplayLog {
    /// An empty log that keeps at most `max_events` events (at least 1) and at most
    /// `max_bytes` bytes of them, the newest event always kept.
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        ReplayLog {
            events: VecDeque::new(),
            next_id: 1,
            bytes: 0,
            max_events: max_events.max(1),
            max_bytes,
        }
    }

    /// Appends the event with the next id as its `id:` field (replacing any id it had) and
    /// returns that id. The event is encoded here, once; the log shares that encoding.
    pub fn push(&mut self, event: impl Into<Event>) -> u64 {
        let id = self.next_id;
        let event = event
            .into()
            .id(id.to_string())
            .expect("a decimal id holds no CR, LF or NUL")
            .into_shared();
        self.next_id += 1;
        self.bytes += event.encoded_len();
        self.events.push_back(event);
        while self.events.len() > self.max_events
            || (self.bytes > self.max_bytes && self.events.len() > 1)
        {
            if let Some(evicted) = self.events.pop_front() {
                self.bytes -= evicted.encoded_len();
            }
        }
        id
    }

    /// The events strictly after `last`, oldest first; an error if some of them were evicted
    /// or if the log never issued `last`.
    pub fn after(&self, last: &LastEventId) -> Result<Replay<'_>, ReplayError> {
        let start = self.resume_point(last)?;
        let skip = usize::try_from(start - self.first_id()).unwrap_or(usize::MAX);
        Ok(Replay(self.events.range(skip.min(self.events.len())..)))
    }

    /// The id of the first event a client that last got `last` still needs.
    pub(crate) fn resume_point(&self, last: &LastEventId) -> Result<u64, ReplayError> {
        let Some(id) = last.as_u64().filter(|&id| id < self.next_id) else {
            return Err(ReplayError::Unknown { last: last.clone() });
        };
        let first_retained = self.first_id();
        if id + 1 < first_retained {
            return Err(ReplayError::Evicted {
                last: id,
                first_retained,
            });
        }
        Ok(id + 1)
    }

    /// What the log holds from `id` on: that event and at most `more` after it.
    pub(crate) fn read(&self, id: u64, more: usize) -> Entry<'_> {
        let first = self.first_id();
        if id < first {
            return Entry::Evicted {
                first_retained: first,
            };
        }
        let at = usize::try_from(id - first).unwrap_or(usize::MAX);
        match self.events.get(at) {
            Some(event) => {
                let end = self
                    .events
                    .len()
                    .min(at.saturating_add(1).saturating_add(more));
                Entry::Retained(event, Replay(self.events.range(at + 1..end)))
            }
            None => Entry::Future,
        }
    }

    /// The oldest retained id (equal to [`next_id`](ReplayLog::next_id) while the log is
    /// empty).
    fn first_id(&self) -> u64 {
        self.next_id - self.events.len() as u64
    }

    /// The id of the latest event, or 0 before the first one.
    pub fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// The id the next [`push`](ReplayLog::push) assigns.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// How many events the log holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the log holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The encoded size of the events the log holds, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The events of a [`ReplayLog`] after an id, oldest first (see [`ReplayLog::after`]).
///
/// Each event shares the log's encoding, so cloning one costs no copy.
#[derive(Debug, Clone)]
pub struct Replay<'a>(std::collections::vec_deque::Iter<'a, Event>);

impl<'a> Iterator for Replay<'a> {
    type Item = &'a Event;

    fn next(&mut self) -> Option<&'a Event> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Replay<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for Replay<'_> {}

impl FusedIterator for Replay<'_> {}
