//! [`GuardedIo`]: an accepted connection whose writes have a deadline and which its guard can
//! close.

use std::{
    fmt,
    future::Future,
    io,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{sleep_until, Instant, Sleep},
};

use super::{ConnState, ConnectionHandle, Registration};
use crate::CloseReason;

pin_project! {
    /// An accepted connection watched by a [`StallGuard`](super::StallGuard): reads and writes
    /// pass through, and once the guard decides to close it (a write stalled past the write
    /// timeout, a stream past its deadline, [`close_all`](super::StallGuard::close_all)) every
    /// read and write fails, so hyper drops the connection.
    ///
    /// It is a tokio `AsyncRead + AsyncWrite`: serve it with hyper-util's `TokioIo`.
    pub struct GuardedIo<IO> {
        #[pin]
        io: IO,
        state: Arc<ConnState>,
        write_timeout: Option<Duration>,
        // Armed while a write is waiting; `None` until the first write waits.
        stall: Option<Pin<Box<Sleep>>>,
        write_waiting: bool,
        // The earliest deadline of a stream on the connection.
        deadline: Option<Pin<Box<Sleep>>>,
        registration: Registration,
    }
}

impl<IO> GuardedIo<IO> {
    pub(super) fn new(
        io: IO,
        state: Arc<ConnState>,
        write_timeout: Option<Duration>,
        registration: Registration,
    ) -> Self {
        GuardedIo {
            io,
            state,
            write_timeout,
            stall: None,
            write_waiting: false,
            deadline: None,
            registration,
        }
    }

    /// The handle to put into every request served on this connection (as a request
    /// extension; `axum::serve` users get it as connect info, see
    /// [`StallGuard::listener`](super::StallGuard::listener)).
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle {
            state: self.state.clone(),
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

/// The error every read and write of a closed connection returns.
fn closed_error(reason: CloseReason) -> io::Error {
    let kind = match reason {
        CloseReason::Stalled => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(
        kind,
        format!("connection closed by the stall guard: {reason}"),
    )
}

impl<IO> GuardedIo<IO> {
    /// Fails once the connection must close; otherwise keeps the stream-deadline timer armed
    /// for this task.
    fn check(self: Pin<&mut Self>, cx: &mut Context<'_>) -> io::Result<()> {
        let this = self.project();
        this.state.waker.register(cx.waker());
        if let Some(&reason) = this.state.closed.get() {
            return Err(closed_error(reason));
        }
        if this.state.deadlines_changed.swap(false, Ordering::AcqRel) {
            match this.state.earliest_deadline() {
                Some(at) => match this.deadline {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => *this.deadline = Some(Box::pin(sleep_until(at))),
                },
                None => *this.deadline = None,
            }
        }
        if let Some(sleep) = this.deadline {
            if sleep.as_mut().poll(cx).is_ready() {
                // Withdrawn or moved since it was armed: look again.
                match this.state.earliest_deadline() {
                    Some(at) if at <= Instant::now() => {
                        this.state.close(CloseReason::Stalled);
                        return Err(closed_error(CloseReason::Stalled));
                    }
                    Some(at) => sleep.as_mut().reset(at),
                    None => *this.deadline = None,
                }
            }
        }
        Ok(())
    }

    /// Accounts for a write's outcome: progress clears the stall timer; waiting starts it, and
    /// waiting past the write timeout closes the connection.
    fn after_write<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        progressed: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        match &polled {
            Poll::Ready(Ok(value)) => {
                if progressed(value) {
                    *this.write_waiting = false;
                }
                return polled;
            }
            Poll::Ready(Err(_)) => return polled,
            Poll::Pending => {}
        }
        let Some(timeout) = *this.write_timeout else {
            return Poll::Pending;
        };
        if !*this.write_waiting {
            *this.write_waiting = true;
            // A timeout too far away to represent never fires.
            let Some(at) = Instant::now().checked_add(timeout) else {
                return Poll::Pending;
            };
            match this.stall {
                Some(sleep) => sleep.as_mut().reset(at),
                None => *this.stall = Some(Box::pin(sleep_until(at))),
            }
        }
        if let Some(sleep) = this.stall {
            if sleep.as_mut().poll(cx).is_ready() {
                this.state.close(CloseReason::Stalled);
                return Poll::Ready(Err(closed_error(CloseReason::Stalled)));
            }
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead> AsyncRead for GuardedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.as_mut().check(cx)?;
        self.project().io.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for GuardedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.as_mut().check(cx)?;
        let polled = self.as_mut().project().io.poll_write(cx, buf);
        self.after_write(cx, polled, |&n| n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.as_mut().check(cx)?;
        let polled = self.as_mut().project().io.poll_write_vectored(cx, bufs);
        self.after_write(cx, polled, |&n| n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_mut().check(cx)?;
        let polled = self.as_mut().project().io.poll_flush(cx);
        self.after_write(cx, polled, |_| true)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.closed.get().is_some() {
            // Nothing more goes out: let the connection go at once.
            return Poll::Ready(Ok(()));
        }
        let polled = self.as_mut().project().io.poll_shutdown(cx);
        self.after_write(cx, polled, |_| true)
    }
}

impl<IO: fmt::Debug> fmt::Debug for GuardedIo<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedIo")
            .field("io", &self.io)
            .field("write_timeout", &self.write_timeout)
            .field("close_reason", &self.state.closed.get())
            .finish_non_exhaustive()
    }
}
