//! [`Tracker`]: what the layer keeps for one response, from the request to the end of the body.

use std::{fmt, sync::Arc};

use tokio::time::Instant;

use super::Config;
use crate::{CloseInfo, CloseReason, SseConnection};

/// The layer's record of one response: its options, the request's [`SseConnection`], when it
/// started and what was written. It travels with the response (future, then body) and reports
/// the end exactly once; dropped before reporting, it reports
/// [`CloseReason::Disconnected`].
pub(crate) struct Tracker {
    pub(crate) config: Arc<Config>,
    connection: SseConnection,
    started: Instant,
    events: u64,
    bytes: u64,
}

impl Tracker {
    /// Starts tracking a request that reaches the layer now; returns the handle for it.
    pub(crate) fn start(config: Arc<Config>) -> (SseConnection, Tracker) {
        let connection = SseConnection::new();
        let tracker = Tracker {
            config,
            connection: connection.clone(),
            started: Instant::now(),
            events: 0,
            bytes: 0,
        };
        (connection, tracker)
    }

    /// When the stream must end under the `max_duration` option.
    pub(crate) fn end_at(&self) -> Option<Instant> {
        let limit = self.config.max_duration?;
        self.started.checked_add(limit)
    }

    /// Counts bytes and complete events written.
    pub(crate) fn record(&mut self, bytes: usize, events: u64) {
        self.bytes += bytes as u64;
        self.events += events;
    }

    /// Ends the response with this reason, unless it already ended.
    pub(crate) fn report(&mut self, reason: CloseReason) {
        if !self.connection.close(reason) {
            return;
        }
        if let Some(on_close) = &self.config.on_close {
            on_close(CloseInfo {
                reason,
                duration: self.started.elapsed(),
                events: self.events,
                bytes: self.bytes,
            });
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.report(CloseReason::Disconnected);
    }
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("connection", &self.connection)
            .field("events", &self.events)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}
