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

    /// An id the crate made itself (no NUL, CR or LF by construction).
    pub(crate) fn issued(id: String) -> Self {
        debug_assert!(!id.bytes().any(|b| matches!(b, b'\0' | b'\r' | b'\n')));
        LastEventId(id.into_boxed_str())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a number, if it is one in canonical decimal form (no sign, no leading zero).
    pub fn as_u64(&self) -> Option<u64> {
        canonical_u64(self.as_str())
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
    /// Events after the id were already evicted (or trimmed from the broker's stream), so some
    /// are lost for this client.
    Evicted {
        /// The id the client sent.
        last: LastEventId,
        /// How many events it missed for good, when the log can tell.
        missed: Option<u64>,
    },
    /// The log never issued this id: it is malformed, newer than the latest event, or from
    /// another epoch (an earlier run of the server, a removed topic, a broker that lost its
    /// data).
    Unknown {
        /// The id the client sent.
        last: LastEventId,
    },
}

impl ReplayError {
    /// How many events the client missed for good (0 when that is not known).
    pub fn missed(&self) -> u64 {
        match self {
            ReplayError::Evicted { missed, .. } => missed.unwrap_or(0),
            ReplayError::Unknown { .. } => 0,
        }
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Evicted { last, missed } => {
                write!(f, "cannot resume after event {:?}: ", last.as_str())?;
                match missed {
                    Some(missed) => write!(f, "{missed} later events were evicted"),
                    None => f.write_str("it is no longer held"),
                }
            }
            ReplayError::Unknown { last } => {
                write!(f, "event id {:?} was never issued", last.as_str())
            }
        }
    }
}

impl std::error::Error for ReplayError {}

/// A new epoch: a short token that tells one log instance from every other (another run of
/// the process, another topic of the same name), so that an id it did not issue is never
/// mistaken for one it did.
pub(crate) fn new_epoch() -> Box<str> {
    use std::{
        hash::BuildHasher,
        sync::atomic::{AtomicU64, Ordering},
        time::{SystemTime, UNIX_EPOCH},
    };
    static LOGS: AtomicU64 = AtomicU64::new(0);
    let count = LOGS.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    // The standard hasher's keys are random per process: with the time and a counter, every
    // log of every run draws its own token.
    let token = std::collections::hash_map::RandomState::new().hash_one((count, nanos));
    format!("{:08x}", token as u32).into_boxed_str()
}

/// How a log writes the keys of its events into their ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdScheme {
    /// `EPOCH-N`: the log numbers its events itself, 1, 2, 3...
    Counter,
    /// `EPOCH-MS-SEQ`: a broker's stream ids (a Redis stream id is `MS-SEQ`), the key being
    /// `MS << 64 | SEQ`.
    Stream,
}

impl IdScheme {
    /// The id of the event with this key in this epoch.
    pub(crate) fn format(self, epoch: &str, key: u128) -> String {
        match self {
            IdScheme::Counter => format!("{epoch}-{key}"),
            IdScheme::Stream => format!("{epoch}-{}-{}", key >> 64, key as u64),
        }
    }

    /// The epoch and key of an id written by [`format`](IdScheme::format), if it is one.
    pub(crate) fn parse(self, id: &str) -> Option<(&str, u128)> {
        let (epoch, key) = id.split_once('-')?;
        if epoch.is_empty() {
            return None;
        }
        let key = match self {
            IdScheme::Counter => u128::from(canonical_u64(key)?),
            IdScheme::Stream => {
                let (ms, seq) = key.split_once('-')?;
                u128::from(canonical_u64(ms)?) << 64 | u128::from(canonical_u64(seq)?)
            }
        };
        Some((epoch, key))
    }
}

/// A number in canonical decimal form (no sign, no leading zero).
fn canonical_u64(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// A bounded, in-memory log of the latest events of one stream, numbering them as they come.
///
/// [`push`](ReplayLog::push) gives every event the next id and encodes it once;
/// [`after`](ReplayLog::after) yields the events strictly after a client's [`LastEventId`]. An
/// id is `EPOCH-N`: `N` counts 1, 2, 3..., and the epoch is drawn when the log is made, so an
/// id from another log (an earlier run of the server, a topic that was removed and made again)
/// is [unknown](ReplayError::Unknown) rather than resumed from the wrong place. The log keeps at
/// most `max_events` events and, beyond the newest one, at most `max_bytes` bytes of encoded
/// events, dropping the oldest first.
///
/// For a live feed with many subscribers, a [`Hub`](crate::Hub) topic holds a `ReplayLog` and
/// resumes a subscriber atomically with going live.
///
/// ```
/// use tower_sse::{Event, ReplayLog};
///
/// let mut log = ReplayLog::new(100, 64 * 1024);
/// let first = log.push(Event::from("a"));
/// log.push(Event::from("b"));
/// log.push(Event::from("c"));
/// assert_eq!(first.as_str(), format!("{}-1", log.epoch()));
/// let replay: Vec<_> = log.after(&first)?.map(|event| event.to_bytes()).collect();
/// let epoch = log.epoch();
/// assert_eq!(
///     replay,
///     [format!("data: b\nid: {epoch}-2\n\n"), format!("data: c\nid: {epoch}-3\n\n")]
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ReplayLog {
    entries: VecDeque<Logged>,
    /// The position the next event gets; the log holds positions
    /// `next - entries.len() .. next`.
    next: u64,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    scheme: IdScheme,
    /// The epoch of the ids it issues now; empty while a broker's epoch is not known yet.
    epoch: Box<str>,
    /// The log holds every event of the current epoch whose key is greater than this one.
    floor: u128,
    /// The position of the first event of the current epoch.
    epoch_start: u64,
}

/// One event of a log, with the key its id was made from.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub(crate) key: u128,
    pub(crate) event: Event,
}

/// What a [`ReplayLog`] holds from a position on.
pub(crate) enum Entry<'a> {
    /// The event at this position, and up to a given number of the events after it.
    Retained(&'a Logged, std::collections::vec_deque::Iter<'a, Logged>),
    /// The event was evicted; the oldest retained one is at this position.
    Evicted { first_retained: u64 },
    /// No event is at this position yet.
    Future,
}

/// Where a client that sent a given id picks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// At this position of the log, skipping events whose key is not after `skip_through` (a
    /// node whose log has not caught up with the id yet).
    At {
        position: u64,
        skip_through: Option<u128>,
    },
    /// From the broker, strictly after this key: the log no longer (or never) held it.
    Fetch { key: u128 },
}

impl ReplayLog {
    /// An empty log that keeps at most `max_events` events (at least 1) and at most
    /// `max_bytes` bytes of them, the newest event always kept.
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        Self::with_scheme(max_events, max_bytes, IdScheme::Counter, new_epoch())
    }

    /// A log of a broker's stream: its events come with their keys, and its epoch is set once
    /// the broker tells it.
    pub(crate) fn for_stream(max_events: usize, max_bytes: usize) -> Self {
        Self::with_scheme(max_events, max_bytes, IdScheme::Stream, "".into())
    }

    fn with_scheme(max_events: usize, max_bytes: usize, scheme: IdScheme, epoch: Box<str>) -> Self {
        ReplayLog {
            entries: VecDeque::new(),
            next: 1,
            bytes: 0,
            max_events: max_events.max(1),
            max_bytes,
            scheme,
            epoch,
            floor: 0,
            epoch_start: 1,
        }
    }

    /// The epoch of the ids the log issues: the part before the first `-`.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Appends the event with the next id as its `id:` field (replacing any id it had) and
    /// returns that id. The event is encoded here, once; the log shares that encoding.
    pub fn push(&mut self, event: impl Into<Event>) -> LastEventId {
        let key = u128::from(self.next);
        let id = self.scheme.format(&self.epoch, key);
        let event = event
            .into()
            .id(&id)
            .expect("an epoch and decimal numbers hold no CR, LF or NUL")
            .into_shared();
        self.push_keyed(key, event);
        LastEventId::issued(id)
    }

    /// Appends an event that already carries its id (made from `key`, which is greater than
    /// every key of the current epoch so far) and its shared encoding.
    pub(crate) fn push_keyed(&mut self, key: u128, event: Event) {
        self.next += 1;
        self.bytes += event.encoded_len();
        self.entries.push_back(Logged { key, event });
        while self.entries.len() > self.max_events
            || (self.bytes > self.max_bytes && self.entries.len() > 1)
        {
            if let Some(evicted) = self.entries.pop_front() {
                self.bytes -= evicted.event.encoded_len();
                if self.first_position() > self.epoch_start {
                    self.floor = evicted.key;
                }
            }
        }
    }

    /// Starts a new epoch (the broker lost its data, or told its epoch for the first time):
    /// ids of the old one are unknown from now on; the log holds every event of the new one
    /// whose key is greater than `floor`. Events already held stay for the subscribers that
    /// have not read them.
    pub(crate) fn start_epoch(&mut self, epoch: Box<str>, floor: u128) {
        self.epoch = epoch;
        self.floor = floor;
        self.epoch_start = self.next;
    }

    /// The id scheme and epoch, to make the ids of pushed events.
    pub(crate) fn id_of(&self, key: u128) -> String {
        self.scheme.format(&self.epoch, key)
    }

    /// The events strictly after `last`, oldest first; an error if some of them were evicted
    /// or if the log never issued `last`.
    pub fn after(&self, last: &LastEventId) -> Result<Replay<'_>, ReplayError> {
        let position = match self.resume_point(last)? {
            Resume::At { position, .. } => position,
            Resume::Fetch { .. } => {
                return Err(ReplayError::Evicted {
                    last: last.clone(),
                    missed: None,
                })
            }
        };
        let skip = usize::try_from(position - self.first_position()).unwrap_or(usize::MAX);
        Ok(Replay(self.entries.range(skip.min(self.entries.len())..)))
    }

    /// Where a client that last got `last` picks up.
    pub(crate) fn resume_point(&self, last: &LastEventId) -> Result<Resume, ReplayError> {
        let unknown = || ReplayError::Unknown { last: last.clone() };
        let (epoch, key) = self.scheme.parse(last.as_str()).ok_or_else(unknown)?;
        if self.epoch.is_empty() && self.scheme == IdScheme::Stream {
            // The broker's epoch is not known yet: the broker itself will tell.
            return Ok(Resume::Fetch { key });
        }
        if epoch != &*self.epoch {
            return Err(unknown());
        }
        self.position_after(key).ok_or_else(|| match self.scheme {
            IdScheme::Counter if key >= u128::from(self.next) => unknown(),
            _ => ReplayError::Evicted {
                last: last.clone(),
                missed: Some(
                    self.first_position()
                        .saturating_sub(u64::try_from(key).unwrap_or(u64::MAX))
                        .saturating_sub(1),
                ),
            },
        })
    }

    /// Where a reader that has every event of the current epoch up to `key` picks up in this
    /// log: `None` if the log does not hold everything after it (counted logs), or a
    /// [`Resume::Fetch`] (stream logs).
    pub(crate) fn position_after(&self, key: u128) -> Option<Resume> {
        if key < self.floor {
            return match self.scheme {
                IdScheme::Counter => None,
                IdScheme::Stream => Some(Resume::Fetch { key }),
            };
        }
        let start = usize::try_from(self.epoch_start.saturating_sub(self.first_position()))
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        let newest = self
            .entries
            .range(start..)
            .next_back()
            .map(|logged| logged.key);
        match newest {
            Some(newest) if key < newest => {
                // Keys ascend within the epoch: the first event after `key`, by bisection.
                let (mut low, mut high) = (start, self.entries.len());
                while low < high {
                    let middle = low + (high - low) / 2;
                    if self.entries[middle].key <= key {
                        low = middle + 1;
                    } else {
                        high = middle;
                    }
                }
                Some(Resume::At {
                    position: self.first_position() + low as u64,
                    skip_through: None,
                })
            }
            Some(newest) if key == newest => Some(Resume::At {
                position: self.next,
                skip_through: None,
            }),
            _ if self.scheme == IdScheme::Counter => {
                (key < u128::from(self.next)).then_some(Resume::At {
                    position: self.next,
                    skip_through: None,
                })
            }
            // Newer than anything this node has read yet: wait for it.
            _ => Some(Resume::At {
                position: self.next,
                skip_through: Some(key),
            }),
        }
    }

    /// What the log holds from `position` on: that event and at most `more` after it.
    pub(crate) fn read(&self, position: u64, more: usize) -> Entry<'_> {
        let first = self.first_position();
        if position < first {
            return Entry::Evicted {
                first_retained: first,
            };
        }
        let at = usize::try_from(position - first).unwrap_or(usize::MAX);
        match self.entries.get(at) {
            Some(logged) => {
                let end = self
                    .entries
                    .len()
                    .min(at.saturating_add(1).saturating_add(more));
                Entry::Retained(logged, self.entries.range(at + 1..end))
            }
            None => Entry::Future,
        }
    }

    /// The position of the oldest retained event (equal to the next position while the log
    /// is empty).
    fn first_position(&self) -> u64 {
        self.next - self.entries.len() as u64
    }

    /// The position the next event gets.
    pub(crate) fn next_position(&self) -> u64 {
        self.next
    }

    /// The id of the latest event, if the log holds one of the current epoch.
    pub fn last_id(&self) -> Option<LastEventId> {
        let newest = self.entries.back()?;
        (self.next > self.epoch_start).then(|| LastEventId::issued(self.id_of(newest.key)))
    }

    /// How many events the log holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log holds no event.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
pub struct Replay<'a>(std::collections::vec_deque::Iter<'a, Logged>);

impl<'a> Iterator for Replay<'a> {
    type Item = &'a Event;

    fn next(&mut self) -> Option<&'a Event> {
        self.0.next().map(|logged| &logged.event)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Replay<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|logged| &logged.event)
    }
}

impl ExactSizeIterator for Replay<'_> {}

impl FusedIterator for Replay<'_> {}
