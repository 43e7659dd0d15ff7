//! `GET /events`: a live feed of numbered events that a client can resume with
//! `Last-Event-ID`, shared by the axum and the hyper example.
//!
//! One task publishes a tick every `EVENTS_INTERVAL_MS` milliseconds (default 1000) through a
//! [`Hub`] topic, whose replay log numbers every event (`id: 1`, `id: 2`, ...) and keeps the
//! latest [`REPLAY_EVENTS`]. A client that reconnects with `Last-Event-ID` first gets every
//! event it missed, then live ones: no gap, no duplicate.
//!
//! Per-connection query parameters:
//! * `limit=N`: end the response cleanly after N events, which makes `EventSource` clients
//!   reconnect (and so shows resuming at work);
//! * `retry_ms=N`: send `retry: N` first, the reconnection delay the client should use.

use std::{convert::Infallible, env, time::Duration};

use futures::{stream, Stream, StreamExt};
use http::{HeaderMap, Response, StatusCode};
use tower_sse::{
    Event, EventName, Hub, LastEventId, LastEventIdError, ReplayError, SseBody, Topic,
};
use tracing::{info, warn};

use super::ApiError;

/// How many past events the feed keeps for clients that resume (at the default interval,
/// about a quarter of an hour).
pub const REPLAY_EVENTS: usize = 1000;

/// The feed's pace unless `EVENTS_INTERVAL_MS` says otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(1000);

/// The live feed: a hub topic that one task publishes a tick to at a fixed interval.
#[derive(Clone, Debug)]
pub struct Feed {
    topic: Topic,
}

impl Feed {
    /// Starts the publishing task, at the interval `EVENTS_INTERVAL_MS` sets. Exits with a
    /// message on a bad value rather than running with a surprise setting.
    pub fn start() -> Feed {
        let interval = match interval_from_env() {
            Ok(interval) => interval,
            Err(message) => {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
        };
        let topic = Hub::builder()
            .max_events(REPLAY_EVENTS)
            .build()
            .topic("events");
        tokio::spawn(publish_ticks(topic.clone(), interval));
        Feed { topic }
    }
}

fn interval_from_env() -> Result<Duration, String> {
    match env::var("EVENTS_INTERVAL_MS") {
        Err(_) => Ok(DEFAULT_INTERVAL),
        Ok(ms) => match ms.parse() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(format!(
                "EVENTS_INTERVAL_MS={ms:?} is not a positive number of milliseconds"
            )),
        },
    }
}

/// Publishes one tick per interval, forever: its data says which tick it is and when it was
/// made; the replay log gives it its id.
async fn publish_ticks(topic: Topic, interval: Duration) {
    info!(?interval, "publishing /events");
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate: start one interval from now
    for tick in 1u64.. {
        ticker.tick().await;
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        match Event::new().json_data(&serde_json::json!({ "tick": tick, "unix_ms": unix_ms })) {
            Ok(event) => {
                topic.publish(event);
            }
            Err(error) => warn!("could not encode tick {tick}: {error}"),
        }
    }
}

/// Answers `GET /events`: the feed, resumed after the client's `Last-Event-ID` if it sent
/// one. A malformed header or query is a `400` with a JSON error. An id the feed cannot resume
/// after (too old, or from an earlier run of the server) gets an `event: resync` whose data
/// says how many events were lost (0 if unknown), then live events: the client should refetch
/// whatever state it builds from the feed.
pub fn respond(
    feed: &Feed,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<SseBody<impl Stream<Item = Result<Event, Infallible>>>>, ApiError> {
    let params = Params::parse(query.unwrap_or_default())?;
    let last = LastEventId::from_headers(headers).map_err(bad_last_event_id)?;
    let mut first = Vec::new();
    if let Some(retry) = params.retry {
        first.push(Event::new().retry(retry));
    }
    let subscriber = match &last {
        None => feed.topic.subscribe(),
        Some(last) => match feed.topic.subscribe_after(last) {
            Ok(subscriber) => subscriber,
            Err(error) => {
                info!(%last, "cannot resume /events: {error}");
                first.push(resync(&error));
                // Live from now: the resync tells the client to refetch its state anyway.
                feed.topic.subscribe()
            }
        },
    };
    info!(
        last_event_id = last.as_ref().map(LastEventId::as_str),
        limit = ?params.limit,
        "streaming /events"
    );
    let events = stream::iter(first.into_iter().map(Ok))
        .chain(subscriber.take(params.limit.unwrap_or(usize::MAX)));
    Ok(tower_sse::response(SseBody::new(events)))
}

/// The notice sent instead of a replay that cannot be made.
fn resync(error: &ReplayError) -> Event {
    const RESYNC: EventName = EventName::new("resync");
    Event::new()
        .event_name(RESYNC)
        .data(error.missed().to_string())
}

fn bad_last_event_id(error: LastEventIdError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, error.to_string())
}

/// The query parameters of `GET /events`.
struct Params {
    limit: Option<usize>,
    retry: Option<Duration>,
}

impl Params {
    /// Reads `limit` and `retry_ms`; other parameters are ignored.
    fn parse(query: &str) -> Result<Params, ApiError> {
        let mut params = Params {
            limit: None,
            retry: None,
        };
        for pair in query.split('&') {
            if let Some(value) = pair.strip_prefix("limit=") {
                let limit = value.parse().ok().filter(|&limit| limit > 0);
                params.limit = Some(limit.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "`limit` must be a positive integer",
                    )
                })?);
            } else if let Some(value) = pair.strip_prefix("retry_ms=") {
                let ms = value.parse().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "`retry_ms` must be a number of milliseconds",
                    )
                })?;
                params.retry = Some(Duration::from_millis(ms));
            }
        }
        Ok(params)
    }
}
