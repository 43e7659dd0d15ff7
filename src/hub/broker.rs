//! The interface between a hub's fan-out and a message broker that keeps its topics' logs for
//! several servers at once.
//!
//! The fan-out (the topic's log, subscribers' cursors, wakers, the lag policy) does not know
//! which broker it runs on: a broker appends what it acknowledged, through one reader per
//! topic and node, to the topic's [`Feed`](super::Feed), and serves the catch-up reads of
//! clients that resume from further back than the node's log reaches. Adding a broker is one
//! implementation of [`Broker`].

use std::{future::Future, pin::Pin};

use crate::{Event, LastEventId};

use super::{Feed, PublishError};

/// A future a broker hands the hub.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A broker's stream was asked for events that it no longer holds, or that it never held in
/// that epoch: the client has to resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap;

/// A page of a catch-up read: events with their keys, oldest first, or the gap that ends it.
pub(crate) type Page = Result<Vec<(u128, Event)>, Gap>;

/// What a broker does for a hub.
pub(crate) trait Broker: Send + Sync + 'static {
    /// Appends the event (its encoding, any id line in it to be replaced) to the topic's
    /// stream, in one round trip; resolves once the broker acknowledged it, with its id.
    fn publish(&self, topic: &str, event: &Event) -> BoxFuture<Result<LastEventId, PublishError>>;

    /// A page of the topic's events after `key`, oldest first, each with its key and its id
    /// made with the [`Stream`](crate::replay::IdScheme::Stream) scheme. With `including`,
    /// the event with that very key must still be held (it is a client's last event, which
    /// proves nothing was trimmed between), and it is left out of the page. A [`Gap`] if the
    /// stream's epoch is not `epoch` or that event is gone. While the broker is away it waits.
    fn fetch(&self, topic: &str, epoch: &str, key: u128, including: bool) -> BoxFuture<Page>;

    /// Starts this node's reader of the topic, which appends every event the broker
    /// acknowledged to `feed` until the topic is closed.
    fn follow(&self, feed: Feed);
}

/// The event a broker stored as `encoded` (as [`Event::to_bytes`] wrote it), with `id` as its
/// id, shared for the fan-out; `None` if the bytes are not an event's encoding.
///
/// It is rebuilt with the builder, line by line: the encoding is canonical, so the result is
/// the same bytes with the id line replaced.
pub(crate) fn stored_event(encoded: &[u8], id: &str) -> Option<Event> {
    let text = std::str::from_utf8(encoded).ok()?;
    let lines = text.strip_suffix("\n\n")?;
    let mut event = Event::new();
    for line in lines.split('\n') {
        event = if let Some(data) = line.strip_prefix("data: ") {
            event.data(data)
        } else if let Some(name) = line.strip_prefix("event: ") {
            event.event(name).ok()?
        } else if let Some(ms) = line.strip_prefix("retry: ") {
            event.retry(std::time::Duration::from_millis(ms.parse().ok()?))
        } else if line.starts_with("id: ") {
            event
        } else if let Some(comment) = line.strip_prefix(':') {
            event.comment(comment.strip_prefix(' ').unwrap_or(comment))
        } else {
            return None;
        };
    }
    Some(event.id(id).ok()?.into_shared())
}
