//! [`StallGuard`]: closes connections whose client stopped reading, which no limit of a
//! response body can do alone.
//!
//! hyper polls a response body only while it can write what the body gives: once an HTTP/1.1
//! client stops reading, the socket's buffers fill and hyper stops polling; once an HTTP/2
//! client stops releasing flow-control window, hyper stops polling that stream while the
//! socket stays healthy. A body that is not polled cannot notice its time limit or a shutdown.
//! The guard watches the connection itself, below hyper:
//!
//! * a write that makes no progress for the write timeout (30 s by default) closes the
//!   connection (HTTP/1.1 and HTTP/2: the socket is full);
//! * a stream behind [`SseLayer`](crate::SseLayer) that had to end (its `max_duration`, its
//!   channel's timeout) and is still open its grace later closes its connection (the HTTP/2
//!   flow-control stall, where the socket is not full);
//! * [`StallGuard::close_all`], which [`Shutdown`] calls once its grace is over, closes every
//!   connection still open.
//!
//! Streams on a connection closed this way report [`CloseReason::Stalled`] (or
//! [`CloseReason::Shutdown`] for `close_all`), through `on_close`, [`SseConnection`] and linked
//! channels alike.
//!
//! [`SseConnection`]: crate::SseConnection

mod io;
#[cfg(feature = "axum")]
mod listener;
mod shutdown;

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
    time::Duration,
};

use futures::task::AtomicWaker;
use tokio::{sync::Notify, time::Instant};

pub use io::GuardedIo;
#[cfg(feature = "axum")]
pub use listener::GuardedListener;
pub use shutdown::Shutdown;

use crate::CloseReason;

/// The default write timeout.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Closes accepted connections whose client stops reading: a write that makes no progress for
/// the write timeout, a stream past its deadline, or [`close_all`](StallGuard::close_all).
///
/// Wrap every accepted connection with [`wrap`](StallGuard::wrap) (hyper-util) or the listener
/// with [`listener`](StallGuard::listener) (`axum::serve`), and put the connection's
/// [`ConnectionHandle`] into each request so that [`SseLayer`](crate::SseLayer) can close a
/// connection whose stream it cannot end (see [`GuardedIo::handle`]).
///
/// ```no_run
/// use hyper_util::{rt::{TokioExecutor, TokioIo}, server::conn::auto};
/// use tower_sse::StallGuard;
///
/// # async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
/// let guard = StallGuard::new(); // 30 s without write progress closes a connection
/// loop {
///     let (stream, _) = listener.accept().await?;
///     let io = guard.wrap(stream);
///     let handle = io.handle();
///     let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
///         request.extensions_mut().insert(handle.clone());
///         async move { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) }
///     });
///     let connection = auto::Builder::new(TokioExecutor::new())
///         .serve_connection(TokioIo::new(io), service)
///         .into_owned();
///     tokio::spawn(connection);
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct StallGuard {
    write_timeout: Option<Duration>,
    registry: Arc<Registry>,
}

/// The open connections of a guard.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// Woken whenever the last open connection goes.
    emptied: Notify,
}

impl StallGuard {
    /// A guard that closes a connection after 30 s without write progress.
    pub fn new() -> Self {
        StallGuard {
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            registry: Arc::default(),
        }
    }

    /// Closes a connection once a write has waited this long without any byte going out.
    /// Zero turns the write timeout off (stream deadlines and `close_all` still apply).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Wraps an accepted connection (a `TcpStream`, a TLS stream...); serve the result.
    pub fn wrap<IO>(&self, io: IO) -> GuardedIo<IO> {
        let state = Arc::new(ConnState::default());
        let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
        self.registry.lock().insert(id, state.clone());
        GuardedIo::new(
            io,
            state,
            self.write_timeout,
            Registration {
                registry: self.registry.clone(),
                id,
            },
        )
    }

    /// Wraps an `axum::serve` listener, so that every connection it accepts is guarded; serve
    /// the app with `into_make_service_with_connect_info::<ConnectionHandle>()` so that each
    /// request carries its connection's handle.
    #[cfg(feature = "axum")]
    pub fn listener<L: axum::serve::Listener>(&self, listener: L) -> GuardedListener<L> {
        GuardedListener::new(listener, self.clone())
    }

    /// How many guarded connections are open.
    pub fn open_connections(&self) -> usize {
        self.registry.lock().len()
    }

    /// Closes every guarded connection that is still open; streams on them report
    /// [`CloseReason::Shutdown`] unless they had decided otherwise.
    pub fn close_all(&self) {
        let open: Vec<_> = self.registry.lock().values().cloned().collect();
        for state in open {
            state.close(CloseReason::Shutdown);
        }
    }

    /// Waits until no guarded connection is open.
    pub async fn all_closed(&self) {
        loop {
            let emptied = self.registry.emptied.notified();
            if self.open_connections() == 0 {
                return;
            }
            emptied.await;
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for StallGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StallGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StallGuard")
            .field("write_timeout", &self.write_timeout)
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

/// A connection's place in its guard's registry, given up when the connection is dropped.
struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        open.remove(&self.id);
        let empty = open.is_empty();
        drop(open);
        if empty {
            self.registry.emptied.notify_waiters();
        }
    }
}

/// What a guarded connection and its handles share.
#[derive(Default)]
struct ConnState {
    /// Why the guard closed the connection, once it did.
    closed: OnceLock<CloseReason>,
    /// The connection's task, to wake when the connection must close or re-arm its timer.
    waker: AtomicWaker,
    /// When streams on the connection must be over by.
    deadlines: Mutex<Deadlines>,
    /// The deadlines changed since the connection last looked.
    deadlines_changed: AtomicBool,
}

#[derive(Default)]
struct Deadlines {
    next_key: u64,
    entries: Vec<(u64, Instant)>,
}

impl ConnState {
    fn close(&self, reason: CloseReason) {
        if self.closed.set(reason).is_ok() {
            self.waker.wake();
        }
    }

    fn deadlines(&self) -> MutexGuard<'_, Deadlines> {
        self.deadlines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The earliest deadline of a stream still open.
    fn earliest_deadline(&self) -> Option<Instant> {
        self.deadlines().entries.iter().map(|&(_, at)| at).min()
    }

    fn deadlines_changed(&self) {
        self.deadlines_changed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// A handle on one guarded connection, to put into the requests it carries (as a request
/// extension, or with the `axum` feature as connect info): [`SseLayer`](crate::SseLayer) uses
/// it to close the connection when a stream on it cannot end.
#[derive(Clone)]
pub struct ConnectionHandle {
    state: Arc<ConnState>,
}

impl ConnectionHandle {
    /// Why the guard closed the connection, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.state.closed.get().copied()
    }

    /// Closes the connection now: its next read or write fails, and hyper drops it. Streams on
    /// it report [`CloseReason::Stalled`] unless they had decided otherwise.
    pub fn close(&self) {
        self.state.close(CloseReason::Stalled);
    }

    /// Registers a time by which a stream on this connection must be over; dropping the entry
    /// withdraws it.
    pub(crate) fn deadline(&self, at: Instant) -> DeadlineEntry {
        let mut deadlines = self.state.deadlines();
        let key = deadlines.next_key;
        deadlines.next_key += 1;
        deadlines.entries.push((key, at));
        drop(deadlines);
        self.state.deadlines_changed();
        DeadlineEntry {
            state: self.state.clone(),
            key,
            at,
        }
    }
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("close_reason", &self.close_reason())
            .finish()
    }
}

/// A stream's deadline on its connection, withdrawn when dropped.
pub(crate) struct DeadlineEntry {
    state: Arc<ConnState>,
    key: u64,
    at: Instant,
}

impl DeadlineEntry {
    pub(crate) fn at(&self) -> Instant {
        self.at
    }
}

impl Drop for DeadlineEntry {
    fn drop(&mut self) {
        let mut deadlines = self.state.deadlines();
        deadlines.entries.retain(|&(key, _)| key != self.key);
        drop(deadlines);
        self.state.deadlines_changed();
    }
}
