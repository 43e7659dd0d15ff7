//! [`GuardedListener`]: an `axum::serve` listener whose every connection is guarded.

use std::fmt;

use axum::{
    extract::connect_info::Connected,
    serve::{IncomingStream, Listener},
};

use super::{ConnectionHandle, GuardedIo, StallGuard};

/// An `axum::serve::Listener` around any other one, made by
/// [`StallGuard::listener`](StallGuard::listener): it hands axum each accepted connection
/// wrapped in a [`GuardedIo`].
///
/// Serve the app with `into_make_service_with_connect_info::<ConnectionHandle>()`, so that
/// each request carries the handle of its connection and [`SseLayer`](crate::SseLayer) can close
/// a connection whose stream it cannot end:
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use tower_sse::{ConnectionHandle, SseLayer, StallGuard};
///
/// # async fn run() -> std::io::Result<()> {
/// let guard = StallGuard::new();
/// let app = Router::new().route("/", get(|| async { "hi" })).layer(SseLayer::new());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// axum::serve(
///     guard.listener(listener),
///     app.into_make_service_with_connect_info::<ConnectionHandle>(),
/// )
/// .await
/// # }
/// ```
pub struct GuardedListener<L> {
    inner: L,
    guard: StallGuard,
}

impl<L> GuardedListener<L> {
    pub(super) fn new(inner: L, guard: StallGuard) -> Self {
        GuardedListener { inner, guard }
    }
}

impl<L: Listener> Listener for GuardedListener<L> {
    type Io = GuardedIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (self.guard.wrap(io), addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl<L: Listener> Connected<IncomingStream<'_, GuardedListener<L>>> for ConnectionHandle {
    fn connect_info(stream: IncomingStream<'_, GuardedListener<L>>) -> Self {
        stream.io().handle()
    }
}

impl<L: fmt::Debug> fmt::Debug for GuardedListener<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedListener")
            .field("inner", &self.inner)
            .field("guard", &self.guard)
            .finish()
    }
}
