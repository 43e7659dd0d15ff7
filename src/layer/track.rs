//! [`Tracker`]: what the layer keeps for one response, from the request to the end of the body.

use std::{fmt, sync::Arc};

use http::{Extensions, StatusCode};
use tokio::time::Instant;

use super::Config;
use crate::{CloseInfo, CloseReason, ConnectionHandle, SseConnection};

/// The layer's record of one response: its options, the request's [`SseConnection`], when it
/// started and what was written. It travels with the response (future, then body) and reports
/// the end exactly once; dropped before reporting, it reports
/// [`CloseReason::Disconnected`], or why the guard closed the connection.
pub(crate) struct Tracker {
    pub(crate) config: Arc<Config>,
    pub(crate) connection: SseConnection,
    started: Instant,
    events: u64,
    bytes: u64,
}

impl Tracker {
    /// Starts tracking a request that reaches the layer now; returns the handle for it.
    pub(crate) fn start(config: Arc<Config>, extensions: &Extensions) -> (SseConnection, Tracker) {
        let connection = SseConnection::new(connection_handle(extensions), config.finish_timeout);
        let tracker = Tracker {
            config,
            connection: connection.clone(),
            started: Instant::now(),
            events: 0,
            bytes: 0,
        };
        (connection, tracker)
    }

    /// Notes what the response is; an event stream gets its time limit watched by the guard
    /// as well, for when hyper stops polling it.
    pub(crate) fn responded(&mut self, status: StatusCode, streaming: bool) {
        self.connection.responded(status, streaming);
        if let (true, Some(end)) = (streaming, self.end_at()) {
            self.connection.end_by(end);
        }
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

    /// Decides to end the stream for this reason (unless an ending was decided already):
    /// linked channels stop taking events at once.
    pub(crate) fn decide(&self, reason: CloseReason) -> CloseReason {
        self.connection.decide(reason)
    }

    /// Ends the response with this reason (or the one decided before), unless it already
    /// ended.
    pub(crate) fn report(&mut self, reason: CloseReason) {
        let Some(reason) = self.connection.close(reason) else {
            return;
        };
        if let Some(on_close) = &self.config.on_close {
            let (status, streaming) = self.connection.response_kind();
            on_close(CloseInfo {
                reason,
                duration: self.started.elapsed(),
                events: self.events,
                bytes: self.bytes,
                status,
                streaming,
            });
        }
    }

    /// Reports a response dropped before its end: the client went away, or the guard closed
    /// its connection.
    pub(crate) fn report_dropped(&mut self) {
        let reason = self
            .connection
            .guard_reason()
            .unwrap_or(CloseReason::Disconnected);
        self.report(reason);
    }
}

/// The guarded connection the request arrived on, if the server put its handle in the request
/// (as an extension, or as axum connect info).
fn connection_handle(extensions: &Extensions) -> Option<ConnectionHandle> {
    if let Some(handle) = extensions.get::<ConnectionHandle>() {
        return Some(handle.clone());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<ConnectionHandle>>() {
        return Some(info.0.clone());
    }
    None
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.report_dropped();
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
