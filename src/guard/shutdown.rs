//! [`Shutdown`]: graceful shutdown with a hard deadline.

use std::{future::Future, time::Duration};

use futures::future::Either;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::StallGuard;

/// The default time open connections get to finish after the shutdown signal.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Shuts a server down in two steps: when the signal comes, the [`token`](Shutdown::token) is
/// cancelled, so that the server stops accepting and [`SseLayer`](crate::SseLayer) ends every
/// open stream cleanly (the event in flight, the shutdown event, a blank-line boundary); then,
/// `grace` later (5 s by default), every guarded connection still open is closed, the ones
/// whose client stopped reading included, so the server's own graceful shutdown returns.
///
/// ```no_run
/// # #[cfg(feature = "axum")]
/// use axum::{routing::get, Router};
/// # #[cfg(feature = "axum")]
/// use tower_sse::{ConnectionHandle, Shutdown, SseLayer, StallGuard};
///
/// # #[cfg(feature = "axum")]
/// # async fn run() -> std::io::Result<()> {
/// let guard = StallGuard::new();
/// let shutdown = Shutdown::new(&guard);
/// tokio::spawn(shutdown.clone().run(async {
///     let _ = tokio::signal::ctrl_c().await;
/// }));
/// let app = Router::new()
///     .route("/", get(|| async { "hi" }))
///     .layer(SseLayer::new().graceful_shutdown(shutdown.token()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// axum::serve(
///     guard.listener(listener),
///     app.into_make_service_with_connect_info::<ConnectionHandle>(),
/// )
/// .with_graceful_shutdown(shutdown.signalled())
/// .await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Shutdown {
    token: CancellationToken,
    guard: StallGuard,
    grace: Duration,
}

impl Shutdown {
    /// A shutdown of the connections `guard` watches, with 5 s of grace.
    pub fn new(guard: &StallGuard) -> Self {
        Shutdown {
            token: CancellationToken::new(),
            guard: guard.clone(),
            grace: DEFAULT_GRACE,
        }
    }

    /// How long open connections get to finish after the signal before they are closed.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The token cancelled at the signal: give it to
    /// [`SseLayer::graceful_shutdown`](crate::SseLayer::graceful_shutdown) and to the server.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Completes at the signal: the server's graceful-shutdown future
    /// (`axum::serve(..).with_graceful_shutdown(shutdown.signalled())`).
    pub fn signalled(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    /// Waits for `signal` (or for the token to be cancelled some other way), then shuts down:
    /// cancels the token, waits until every guarded connection is closed or the grace is over,
    /// and closes the ones still open. Spawn it next to the server.
    pub async fn run(self, signal: impl Future<Output = ()>) {
        let signal = std::pin::pin!(signal);
        let cancelled = std::pin::pin!(self.token.cancelled());
        if let Either::Left(..) = futures::future::select(signal, cancelled).await {
            self.token.cancel();
        }
        self.finish().await;
    }

    /// Cancels the token now and shuts down as [`run`](Shutdown::run) does after its signal.
    pub async fn now(self) {
        self.token.cancel();
        self.finish().await;
    }

    async fn finish(&self) {
        let all_closed = self.guard.all_closed();
        if tokio::time::timeout(self.grace, all_closed).await.is_err() {
            self.guard.close_all();
        }
    }
}
