//! [`ResponseBody`]: the response body [`SseService`](super::SseService) returns. Around an
//! event stream it adds keep-alives, the time limit and graceful shutdown; around any other body
//! it only watches how the response ends.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    clock::{Clock, Timer},
    scan::Scanner,
    track::Tracker,
    Config, Signal,
};
use crate::{framing::Streaming, BoxError, CloseReason};

pin_project! {
    #[project = ResponseBodyProj]
    /// The response body of [`SseService`](super::SseService), around the inner service's body.
    ///
    /// For an event stream it forwards the inner body and writes keep-alives after silences,
    /// only between events; it ends the stream at an event boundary when the time limit passes
    /// or the server shuts down. Any other body is forwarded as it is. Either way it reports how
    /// the response ended to the request's [`SseConnection`](crate::SseConnection) once.
    ///
    /// An event stream is over ([`is_end_stream`](Body::is_end_stream)) only once this body
    /// handed over its end, one poll after its last frame: the layers outside it then see that
    /// end (tower-http's `TraceLayer` calls `on_eos` there), which they miss when hyper stops
    /// polling at a body that said so with its last frame. Any other body says it is over
    /// when the inner body does.
    ///
    /// ```
    /// use http_body::Body as _;
    /// use http_body_util::BodyExt;
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_sse::{layer::ResponseBody, EventReceiver, SseBody, SseLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_sse::BoxError> {
    /// let service = ServiceBuilder::new()
    ///     .layer(SseLayer::new())
    ///     .service_fn(|_: http::Request<()>| async {
    ///         let (emitter, body) = tower_sse::channel(1);
    ///         emitter.try_send("last")?;
    ///         emitter.complete();
    ///         Ok::<_, tower_sse::BoxError>(tower_sse::response(body))
    ///     });
    /// let response = service.oneshot(http::Request::new(())).await?;
    /// let body: ResponseBody<SseBody<EventReceiver>> = response.into_body();
    /// let mut body = std::pin::pin!(body);
    /// let last = body.frame().await.unwrap()?.into_data().unwrap();
    /// assert_eq!(&last[..], b"data: last\n\n");
    /// assert!(!body.is_end_stream()); // not yet: the end is handed over first
    /// assert!(body.frame().await.is_none());
    /// assert!(body.is_end_stream());
    /// # Ok(())
    /// # }
    /// ```
    pub struct ResponseBody<B>
    where
        B: Body,
    {
        #[pin]
        inner: B,
        // The keep-alive, time-limit and finish deadline, set on the first poll.
        timer: Option<Timer>,
        phase: Phase,
        // The shutdown signal while the stream runs; the inner body's error while it waits to
        // be handed over (one field for both, so a stream pays for neither).
        watch: Watch,
        // The task's waker as of the last poll that waited: the shutdown signal and the clock
        // wake this one. The signal is polled (which takes its lock) only when it changes.
        waker: Option<Waker>,
        scanner: Scanner,
        tracker: Tracker,
    }

    impl<B> PinnedDrop for ResponseBody<B>
    where
        B: Body,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Servers may drop a body that says it is over without polling it to its end.
            if this.phase.forwards_inner() && this.inner.is_end_stream() {
                this.tracker.report(CloseReason::Completed);
            }
            // Reported before the inner body goes, so that a linked channel learns the
            // layer's reason rather than just its body being dropped.
            this.tracker.report_dropped();
            // The clock lets go of this task's waker now, not at the deadline.
            if let Some(timer) = this.timer {
                timer.forget(&this.tracker.config.clock);
            }
        }
    }
}

/// Where a body is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not an event stream: forwarded untouched.
    PassThrough,
    /// An event stream not polled yet.
    Opening,
    /// An event stream being forwarded, with keep-alives in the silences.
    Streaming,
    /// An event stream that must end: forwarded up to the end of the event in flight.
    Finishing(CloseReason),
    /// An event stream at an event boundary that must end: the final event, then the end.
    Closing(CloseReason),
    /// An event stream whose inner body failed (reported): its error, once the connection has
    /// had [`ABORT_LINGER`] to write what went before it.
    Failing,
    /// Over and reported, the last frame handed over: the end is next. Saying so one poll
    /// late lets the layers outside see the `None` (TraceLayer's `on_eos` waits for it), which
    /// they miss when hyper stops at a body that reports its end with its last frame.
    Ending,
    /// Over, reported, and the end (or an error) handed over.
    Done,
}

impl Phase {
    /// Whether the inner body still decides where the stream ends.
    fn forwards_inner(self) -> bool {
        matches!(self, Phase::PassThrough | Phase::Opening | Phase::Streaming)
    }
}

/// What a body watches besides its inner body and the clock.
enum Watch {
    Nothing,
    /// The layer's shutdown signal, until it fires.
    Shutdown(Signal),
    /// The inner body's error, held while the connection writes what went before it.
    Failure(BoxError),
}

/// What one poll of a body hands over.
type FramePoll<D, E> = Poll<Option<Result<Frame<D>, E>>>;

/// What one poll of this body hands over.
type PollFrame = FramePoll<Bytes, BoxError>;

impl<B: Body> ResponseBody<B> {
    /// Wraps the body of a streaming response: an event stream, or a stream of another framing,
    /// into which nothing of the layer's own may go (no keep-alive, comment or final event).
    pub(super) fn stream(inner: B, mut tracker: Tracker, streaming: Streaming) -> Self {
        if streaming != Streaming::Events {
            let mut config = Config::clone(&tracker.config);
            config.keep_alive = None;
            config.open_comment = None;
            config.max_duration_event = None;
            config.shutdown_event = None;
            tracker.config = Arc::new(config);
        }
        let watch = tracker
            .config
            .shutdown
            .clone()
            .map_or(Watch::Nothing, Watch::Shutdown);
        let mut body = Self::new(inner, Phase::Opening, watch, tracker);
        body.scanner = Scanner::for_stream(streaming);
        body
    }

    /// Wraps the body of any other response.
    pub(super) fn pass_through(inner: B, tracker: Tracker) -> Self {
        Self::new(inner, Phase::PassThrough, Watch::Nothing, tracker)
    }

    fn new(inner: B, phase: Phase, watch: Watch, tracker: Tracker) -> Self {
        ResponseBody {
            inner,
            timer: None,
            phase,
            watch,
            waker: None,
            scanner: Scanner::new(),
            tracker,
        }
    }
}

/// When the timer should fire next, now that the stream was last written to.
fn next_deadline(tracker: &Tracker) -> Option<Instant> {
    let keep_alive = tracker.config.keep_alive.and_then(|interval| {
        let due = Instant::now().checked_add(interval)?;
        Some(coalesce(due, interval))
    });
    match (keep_alive, tracker.end_at()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Rounds a keep-alive deadline down to a grid that every stream in the process shares, by at
/// most a sixteenth of the interval (and never more than a second). The keep-alives of many
/// idle streams then fall due together and the runtime wakes once for a batch of them instead
/// of once each, which is most of what an idle stream costs in CPU. Rounding down keeps every
/// keep-alive within its interval, to the nanosecond, even under tokio's paused clock.
fn coalesce(due: Instant, interval: Duration) -> Instant {
    static GRID_START: OnceLock<Instant> = OnceLock::new();
    let start = *GRID_START.get_or_init(Instant::now);
    let step = (interval / 16).min(Duration::from_secs(1)).as_nanos();
    let since_start = due.saturating_duration_since(start).as_nanos();
    if step == 0 {
        return due;
    }
    let rounded = since_start - since_start % step;
    u64::try_from(rounded)
        .ok()
        .and_then(|nanos| start.checked_add(Duration::from_nanos(nanos)))
        .unwrap_or(due)
}

/// Keeps the task's waker before the body waits; returns whether it changed, in which case
/// what was registered with the old one (the timer's wake-up here, the shutdown signal by the
/// caller) must be registered again.
fn renew_waker(
    kept: &mut Option<Waker>,
    timer: &mut Option<Timer>,
    clock: &Clock,
    cx: &Context<'_>,
) -> bool {
    if kept.as_ref().is_some_and(|kept| kept.will_wake(cx.waker())) {
        return false;
    }
    *kept = Some(cx.waker().clone());
    if let Some(timer) = timer {
        timer.forget(clock);
    }
    true
}

/// Checks the shutdown signal: a cheap look while the stream is busy, and when it is about to
/// wait a poll that registers for a wake-up (`cx`, and whether the task's waker is new).
/// Polling the shared signal takes a lock that every stream shares, so with a token (whose
/// state is one atomic load away) it is polled only when the task's waker changed. Forgets
/// the signal once it fired.
fn shutdown_fired(
    signal: &mut Watch,
    token: Option<&CancellationToken>,
    cx: Option<(&mut Context<'_>, bool)>,
) -> bool {
    let Watch::Shutdown(shared) = signal else {
        return false;
    };
    let fired = match (cx, token) {
        (None, None) => shared.peek().is_some(),
        (None, Some(token)) => token.is_cancelled(),
        (Some((cx, _)), None) => Pin::new(shared).poll(cx).is_ready(),
        (Some((cx, new_waker)), Some(token)) => {
            token.is_cancelled() || (new_waker && Pin::new(shared).poll(cx).is_ready())
        }
    };
    if fired {
        *signal = Watch::Nothing;
    }
    fired
}

/// The error an aborted stream ends with.
fn unfinished_event(reason: CloseReason) -> BoxError {
    format!("{reason}, and the event in flight did not finish within the finish timeout").into()
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PollFrame {
        let mut this = self.project();
        loop {
            match *this.phase {
                Phase::PassThrough => {
                    let polled = this.inner.as_mut().poll_frame(cx);
                    return forward(polled, &this.inner, this.phase, this.tracker, None);
                }
                Phase::Opening => {
                    if let Some(deadline) = next_deadline(this.tracker) {
                        *this.timer = Some(Timer::new(deadline));
                    }
                    *this.phase = Phase::Streaming;
                    if let Some(comment) = this.tracker.config.open_comment.clone() {
                        return own_bytes(comment, this.tracker);
                    }
                }
                Phase::Streaming => {
                    if shutdown_fired(
                        this.watch,
                        this.tracker.config.shutdown_token.as_ref(),
                        None,
                    ) {
                        begin_finish(CloseReason::Shutdown, this.phase, this.timer, this.tracker);
                        continue;
                    }
                    let Some(polled) = poll_event_stream(&mut this, cx) else {
                        continue;
                    };
                    if polled.is_ready() {
                        if this.tracker.config.keep_alive.is_some() {
                            rearm(this.timer, this.tracker);
                        }
                        let scanner = Some(&mut *this.scanner);
                        return forward(polled, &this.inner, this.phase, this.tracker, scanner);
                    }
                    let new_waker =
                        renew_waker(this.waker, this.timer, &this.tracker.config.clock, cx);
                    if shutdown_fired(
                        this.watch,
                        this.tracker.config.shutdown_token.as_ref(),
                        Some((cx, new_waker)),
                    ) {
                        begin_finish(CloseReason::Shutdown, this.phase, this.timer, this.tracker);
                        continue;
                    }
                    let Some(timer) = this.timer.as_mut() else {
                        return Poll::Pending;
                    };
                    let deadline = timer.deadline();
                    if timer.poll(&this.tracker.config.clock, cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Without keep-alives the timer only ever waits for the time limit.
                    if this.tracker.config.keep_alive.is_none()
                        || this.tracker.end_at().is_some_and(|end| deadline >= end)
                    {
                        begin_finish(CloseReason::TimedOut, this.phase, this.timer, this.tracker);
                        continue;
                    }
                    // The stream has been silent for a whole keep-alive interval.
                    rearm(this.timer, this.tracker);
                    if this.scanner.at_boundary() {
                        let keep_alive = this.tracker.config.keep_alive_bytes.clone();
                        this.scanner.own_bytes_written();
                        return own_bytes(keep_alive, this.tracker);
                    }
                    // Mid-event: wait another interval; the loop polls the timer again so that
                    // it wakes this task.
                }
                Phase::Finishing(reason) => {
                    if this.scanner.can_end() {
                        *this.phase = Phase::Closing(reason);
                        continue;
                    }
                    let Some(polled) = poll_event_stream(&mut this, cx) else {
                        continue;
                    };
                    if polled.is_pending() {
                        renew_waker(this.waker, this.timer, &this.tracker.config.clock, cx);
                        let timed_out = this.timer.as_mut().is_some_and(|timer| {
                            timer.poll(&this.tracker.config.clock, cx).is_ready()
                        });
                        if !timed_out {
                            return Poll::Pending;
                        }
                        // The event in flight cannot be completed: abort.
                        *this.phase = Phase::Done;
                        this.tracker.report(reason);
                        return Poll::Ready(Some(Err(unfinished_event(reason))));
                    }
                    let (phase, tracker, scanner) = (this.phase, this.tracker, this.scanner);
                    return finish_event(polled, reason, phase, tracker, scanner);
                }
                Phase::Closing(reason) => {
                    let last = match reason {
                        CloseReason::TimedOut => &this.tracker.config.max_duration_event,
                        _ => &this.tracker.config.shutdown_event,
                    };
                    let frame = last.clone().map(|event| {
                        let events = this.scanner.scan(&event);
                        this.tracker.record(event.len(), events);
                        Ok(Frame::data(event))
                    });
                    this.tracker.report(reason);
                    *this.phase = if frame.is_some() {
                        Phase::Ending
                    } else {
                        Phase::Done
                    };
                    return Poll::Ready(frame);
                }
                Phase::Failing => {
                    renew_waker(this.waker, this.timer, &this.tracker.config.clock, cx);
                    let lingering = this.timer.as_mut().is_some_and(|timer| {
                        timer.poll(&this.tracker.config.clock, cx).is_pending()
                    });
                    if lingering {
                        return Poll::Pending;
                    }
                    *this.phase = Phase::Done;
                    let error = match std::mem::replace(this.watch, Watch::Nothing) {
                        Watch::Failure(error) => error,
                        _ => "the stream failed".into(),
                    };
                    return Poll::Ready(Some(Err(error)));
                }
                Phase::Ending | Phase::Done => {
                    *this.phase = Phase::Done;
                    return Poll::Ready(None);
                }
            }
        }
    }

    /// Any other body ends when it says; an event stream only once it handed over its end.
    fn is_end_stream(&self) -> bool {
        match self.phase {
            Phase::PassThrough => self.inner.is_end_stream(),
            Phase::Done => true,
            _ => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.phase {
            Phase::PassThrough => self.inner.size_hint(),
            Phase::Ending | Phase::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Decides to end the stream for `reason` (linked channels stop taking events at once), and
/// gives the event in flight the finish timeout to complete.
fn begin_finish(
    reason: CloseReason,
    phase: &mut Phase,
    timer: &mut Option<Timer>,
    tracker: &Tracker,
) {
    tracker.decide(reason);
    *phase = Phase::Finishing(reason);
    wait_for(tracker.config.finish_timeout, timer, tracker);
}

/// How long an event stream whose inner body failed waits before it aborts. hyper drops the
/// frames a failed response has not yet written (over HTTP/2, those its connection task has not
/// yet taken from the stream), so the events just before the error would be lost to a client
/// that is reading; this gives the connection the time to write them. On loopback 0.1 ms
/// sufficed; a client that is not reading loses them either way.
const ABORT_LINGER: Duration = Duration::from_millis(20);

/// Polls the inner body of an event stream; an error is held back (see [`begin_failing`]),
/// and `None` says to look at the phase again.
fn poll_event_stream<B>(
    this: &mut ResponseBodyProj<'_, B>,
    cx: &mut Context<'_>,
) -> Option<FramePoll<B::Data, B::Error>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match this.inner.as_mut().poll_frame(cx) {
        Poll::Ready(Some(Err(err))) => {
            begin_failing(err.into(), this.phase, this.watch, this.timer, this.tracker);
            None
        }
        polled => Some(polled),
    }
}

/// Records the inner body's error (reported at once: linked channels stop taking events) and
/// holds it back for [`ABORT_LINGER`].
fn begin_failing(
    error: BoxError,
    phase: &mut Phase,
    watch: &mut Watch,
    timer: &mut Option<Timer>,
    tracker: &mut Tracker,
) {
    tracker.report(CloseReason::Error);
    *watch = Watch::Failure(error);
    *phase = Phase::Failing;
    wait_for(ABORT_LINGER, timer, tracker);
}

/// Points the timer at `wait` from now (no timer when that instant cannot be represented).
fn wait_for(wait: Duration, timer: &mut Option<Timer>, tracker: &Tracker) {
    let Some(at) = Instant::now().checked_add(wait) else {
        if let Some(mut timer) = timer.take() {
            timer.forget(&tracker.config.clock);
        }
        return;
    };
    match timer {
        Some(timer) => timer.reset(at),
        None => *timer = Some(Timer::new(at)),
    }
}

/// Restarts the keep-alive wait after a write (only the deadline moves; the clock is told when
/// the stream next waits).
fn rearm(timer: &mut Option<Timer>, tracker: &Tracker) {
    if let (Some(timer), Some(deadline)) = (timer.as_mut(), next_deadline(tracker)) {
        timer.reset(deadline);
    }
}

/// Hands over bytes the layer writes itself (keep-alives, the open comment), which keep the
/// stream between events.
fn own_bytes(bytes: Bytes, tracker: &mut Tracker) -> PollFrame {
    tracker.record(bytes.len(), 0);
    Poll::Ready(Some(Ok(Frame::data(bytes))))
}

/// A frame of the inner body with its data as `Bytes` (free when it already is `Bytes`).
fn into_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

/// The frame the inner body gave; or, when it gave none, what to hand over instead, the stream
/// being over (reported) if the inner body ended or failed.
fn inner_frame<D: Buf, E: Into<BoxError>>(
    polled: FramePoll<D, E>,
    phase: &mut Phase,
    tracker: &mut Tracker,
) -> Result<Frame<Bytes>, PollFrame> {
    let (reason, last) = match polled {
        Poll::Pending => return Err(Poll::Pending),
        Poll::Ready(Some(Ok(frame))) => return Ok(into_bytes(frame)),
        Poll::Ready(Some(Err(err))) => (CloseReason::Error, Some(Err(err.into()))),
        Poll::Ready(None) => (CloseReason::Completed, None),
    };
    *phase = Phase::Done;
    tracker.report(reason);
    Err(Poll::Ready(last))
}

/// Forwards what the inner body gave, counting it, and reports the end when it is one.
fn forward<B>(
    polled: FramePoll<B::Data, B::Error>,
    inner: &Pin<&mut B>,
    phase: &mut Phase,
    tracker: &mut Tracker,
    scanner: Option<&mut Scanner>,
) -> PollFrame
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut frame = match inner_frame(polled, phase, tracker) {
        Ok(frame) => frame,
        Err(instead) => return instead,
    };
    if let Some(data) = frame.data_mut() {
        let events = scanner.map_or(0, |scanner| {
            scanner.strip_joined_lf(data);
            scanner.scan(data)
        });
        tracker.record(data.len(), events);
    }
    if inner.is_end_stream() {
        tracker.report(CloseReason::Completed);
        if *phase != Phase::PassThrough {
            *phase = Phase::Ending;
        }
    }
    Poll::Ready(Some(Ok(frame)))
}

/// Forwards the inner body up to the end of the event in flight, and moves on to closing there.
/// If the inner body ends first, mid-event, no final event can follow: the stream just ends.
fn finish_event<D: Buf, E: Into<BoxError>>(
    polled: FramePoll<D, E>,
    reason: CloseReason,
    phase: &mut Phase,
    tracker: &mut Tracker,
    scanner: &mut Scanner,
) -> PollFrame {
    let frame = match inner_frame(polled, phase, tracker) {
        Ok(frame) => frame,
        Err(instead) => return instead,
    };
    let mut data = match frame.into_data() {
        Ok(data) => data,
        Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
    };
    scanner.strip_joined_lf(&mut data);
    let mut events = 0;
    if let Some(mut end) = scanner.until_event_end(&data) {
        if scanner.joins_pending_cr(data.get(end)) {
            end += 1;
        }
        // What follows belongs to events the stream no longer has time for.
        data.truncate(end);
        events = 1;
        *phase = Phase::Closing(reason);
    }
    tracker.record(data.len(), events);
    Poll::Ready(Some(Ok(Frame::data(data))))
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("phase", &self.phase)
            .field("scanner", &self.scanner)
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

/// An empty body, passed through untouched, for middlewares that answer with a response of their
/// own: outside an [`SseLayer`](super::SseLayer), tower-http's `TimeoutLayer` makes its `408`
/// and `CorsLayer` its preflight answers from `B::default()`. Such a response never went
/// through the layer, so no handle hears of it.
impl<B: Body + Default> Default for ResponseBody<B> {
    fn default() -> Self {
        let (_, tracker) = Tracker::start(super::SseLayer::new().config, &http::Extensions::new());
        Self::pass_through(B::default(), tracker)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::coalesce;

    #[test]
    fn keep_alive_deadlines_round_down_to_one_shared_grid() {
        let interval = Duration::from_secs(16);
        let step = Duration::from_secs(1);
        let now = Instant::now();
        let dues: Vec<Instant> = (0..50)
            .map(|i| now + interval + Duration::from_millis(i * 7))
            .collect();
        let rounded: Vec<Instant> = dues.iter().map(|&due| coalesce(due, interval)).collect();
        for (due, at) in dues.iter().zip(&rounded) {
            assert!(*at <= *due, "a keep-alive is never late");
            assert!(
                *due - *at < step,
                "and at most a sixteenth of the interval early"
            );
        }
        // 350 ms of spread deadlines fall on at most two grid points.
        let mut distinct = rounded.clone();
        distinct.dedup();
        assert!(distinct.len() <= 2, "{} grid points", distinct.len());
    }

    #[test]
    fn a_short_interval_has_a_fine_grid() {
        let interval = Duration::from_millis(160);
        let due = Instant::now() + interval;
        let at = coalesce(due, interval);
        assert!(at <= due && due - at < Duration::from_millis(10));
    }
}
