//! `GET /events`: a live feed of numbered events that a client can resume with
//! `Last-Event-ID`, shared by the axum and the hyper example.
//!
//! A task publishes a tick every `EVENTS_INTERVAL_MS` milliseconds (default 1000) through a
//! [`Hub`] topic, whose log gives every event its id and keeps the latest ones. A client that
//! reconnects with `Last-Event-ID` first gets every event it missed, then live ones: no gap, no
//! duplicate. Each tick's JSON data counts up (`"tick": 1, 2, 3...`), so clients can check the
//! order whatever the ids look like.
//!
//! With `REDIS_URL` set (the crate's `redis` feature), the topic lives in Redis Streams, bounded
//! by `REDIS_MAXLEN` entries (default 10,000): several example processes on one Redis serve one
//! feed, and a client resumes on any of them. One process at a time publishes the ticks (it
//! holds a lease in Redis, and takes the tick numbers from a Redis counter), so the count stays
//! consecutive for every client of every process.
//!
//! Per-connection query parameters:
//! * `limit=N`: end the response cleanly after N events, which makes `EventSource` clients
//!   reconnect (and so shows resuming at work);
//! * `retry_ms=N`: send `retry: N` first, the reconnection delay the client should use.

use std::{convert::Infallible, env, time::Duration};

use futures::{stream, Stream, StreamExt};
use http::{HeaderMap, Response, StatusCode};
use tower_sse::{Event, Hub, LastEventId, LastEventIdError, SseBody, Topic};
use tracing::{info, warn};

use super::ApiError;

/// How many past events the in-memory feed keeps for clients that resume (at the default
/// interval, about a quarter of an hour).
pub const REPLAY_EVENTS: usize = 1000;

/// The feed's pace unless `EVENTS_INTERVAL_MS` says otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(1000);

/// How many entries the Redis stream keeps unless `REDIS_MAXLEN` says otherwise.
const DEFAULT_REDIS_MAXLEN: usize = 10_000;

/// The live feed: a hub topic that one task publishes a tick to at a fixed interval.
#[derive(Clone, Debug)]
pub struct Feed {
    topic: Topic,
}

impl Feed {
    /// Starts the publishing task, with the settings of `EVENTS_INTERVAL_MS`, `REDIS_URL` and
    /// `REDIS_MAXLEN`. Exits with a message on a bad value rather than running with a
    /// surprise setting.
    pub fn start() -> Feed {
        match Feed::try_start() {
            Ok(feed) => feed,
            Err(message) => {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
        }
    }

    fn try_start() -> Result<Feed, String> {
        let interval = interval_from_env()?;
        let Ok(url) = env::var("REDIS_URL") else {
            let topic = Hub::builder()
                .max_events(REPLAY_EVENTS)
                .build()
                .topic("events");
            tokio::spawn(publish_ticks(topic.clone(), interval, Ticks::Local(0)));
            return Ok(Feed { topic });
        };
        let maxlen = maxlen_from_env()?;
        #[cfg(feature = "redis")]
        {
            let client = redis::Client::open(url.as_str())
                .map_err(|error| format!("REDIS_URL={url:?}: {error}"))?;
            let topic = Hub::builder()
                .max_events(maxlen)
                .redis(client.clone())
                .build()
                .topic("events");
            info!(%url, maxlen, "/events lives in Redis");
            let ticks = Ticks::Redis(redis_ticks::Lease::new(client, interval));
            tokio::spawn(publish_ticks(topic.clone(), interval, ticks));
            Ok(Feed { topic })
        }
        #[cfg(not(feature = "redis"))]
        {
            let _ = maxlen;
            Err(format!(
                "REDIS_URL={url:?} needs the `redis` feature: cargo run --features redis ..."
            ))
        }
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

fn maxlen_from_env() -> Result<usize, String> {
    match env::var("REDIS_MAXLEN") {
        Err(_) => Ok(DEFAULT_REDIS_MAXLEN),
        Ok(text) => match text.parse() {
            Ok(maxlen) if maxlen > 0 => Ok(maxlen),
            _ => Err(format!("REDIS_MAXLEN={text:?} is not a positive number")),
        },
    }
}

/// Where the tick numbers come from.
enum Ticks {
    /// This process counts (the last number given).
    Local(u64),
    /// Redis counts, for the process that holds the lease.
    #[cfg(feature = "redis")]
    Redis(redis_ticks::Lease),
}

impl Ticks {
    /// The next tick number, or `None` when another process publishes this round.
    async fn next(&mut self) -> Option<u64> {
        match self {
            Ticks::Local(last) => {
                *last += 1;
                Some(*last)
            }
            #[cfg(feature = "redis")]
            Ticks::Redis(lease) => lease.next_tick().await,
        }
    }

    /// Whether this process may still publish the tick it was given (after a failure).
    async fn still_mine(&mut self) -> bool {
        match self {
            Ticks::Local(_) => true,
            #[cfg(feature = "redis")]
            Ticks::Redis(lease) => lease.renew().await,
        }
    }
}

/// Publishes one tick per interval, forever: its data says which tick it is and when it was
/// made; the topic's log gives it its id. A tick that is not acknowledged is published again
/// (while this process may), so the count has no hole.
async fn publish_ticks(topic: Topic, interval: Duration, mut ticks: Ticks) {
    info!(?interval, "publishing /events");
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate: start one interval from now
    loop {
        ticker.tick().await;
        let Some(tick) = ticks.next().await else {
            continue;
        };
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let event = match Event::new()
            .json_data(&serde_json::json!({ "tick": tick, "unix_ms": unix_ms }))
        {
            Ok(event) => event,
            Err(error) => {
                warn!("could not encode tick {tick}: {error}");
                continue;
            }
        };
        while let Err(error) = topic.publish(event.clone()).await {
            warn!("could not publish tick {tick}: {error}");
            ticker.tick().await;
            if !ticks.still_mine().await {
                break;
            }
        }
    }
}

/// The lease that lets one process at a time publish the ticks of a feed shared in Redis.
#[cfg(feature = "redis")]
mod redis_ticks {
    use std::time::Duration;

    use redis::aio::MultiplexedConnection;

    /// Takes (or keeps) the lease, then counts. `KEYS`: lease, counter. `ARGV`: this
    /// process's name, the lease's length in ms.
    const NEXT_TICK: &str = r"
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  holder = ARGV[1]
end
if holder ~= ARGV[1] then return false end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('INCR', KEYS[2])
";

    /// Keeps the lease if it is still this process's. Same keys and arguments.
    const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

    const LEASE_KEY: &str = "tower-sse-example:{events}:publisher";
    const COUNTER_KEY: &str = "tower-sse-example:{events}:tick";

    pub struct Lease {
        client: redis::Client,
        connection: Option<MultiplexedConnection>,
        name: String,
        lease_ms: u64,
    }

    impl Lease {
        pub fn new(client: redis::Client, interval: Duration) -> Lease {
            use std::hash::BuildHasher;
            let name = format!(
                "{}-{:x}",
                std::process::id(),
                std::collections::hash_map::RandomState::new().hash_one(0u8)
            );
            // Long enough to survive a late tick, short enough to hand over quickly.
            let lease_ms = (interval.as_millis() as u64).saturating_mul(3) + 1000;
            Lease {
                client,
                connection: None,
                name,
                lease_ms,
            }
        }

        async fn run<T: redis::FromRedisValue>(&mut self, script: &str) -> redis::RedisResult<T> {
            let mut connection = match self.connection.take() {
                Some(connection) => connection,
                None => self.client.get_multiplexed_async_connection().await?,
            };
            let result = redis::cmd("EVAL")
                .arg(script)
                .arg(2)
                .arg(LEASE_KEY)
                .arg(COUNTER_KEY)
                .arg(&self.name)
                .arg(self.lease_ms)
                .query_async(&mut connection)
                .await;
            if result.is_ok() {
                self.connection = Some(connection);
            }
            result
        }

        pub async fn next_tick(&mut self) -> Option<u64> {
            match self.run::<Option<u64>>(NEXT_TICK).await {
                Ok(tick) => tick,
                Err(error) => {
                    tracing::warn!("no tick this round, Redis did not answer: {error}");
                    None
                }
            }
        }

        pub async fn renew(&mut self) -> bool {
            matches!(self.run::<u8>(RENEW).await, Ok(1))
        }
    }
}

/// Answers `GET /events`: the feed, resumed after the client's `Last-Event-ID` if it sent
/// one. A malformed header or query is a `400` with a JSON error. An id the feed cannot resume
/// after (too old, or from an earlier run of the server, or a Redis that lost its data) gets an
/// `event: resync` whose data says how many events were lost (0 if unknown), then live events:
/// the client should refetch whatever state it builds from the feed.
pub fn respond(
    feed: &Feed,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<SseBody<impl Stream<Item = Result<Event, Infallible>>>>, ApiError> {
    let params = Params::parse(query.unwrap_or_default())?;
    let last = LastEventId::from_headers(headers).map_err(bad_last_event_id)?;
    let first = params.retry.map(|retry| Ok(Event::new().retry(retry)));
    let subscriber = feed.topic.resume(last.as_ref());
    info!(
        last_event_id = last.as_ref().map(LastEventId::as_str),
        limit = ?params.limit,
        "streaming /events"
    );
    let events = stream::iter(first).chain(subscriber.take(params.limit.unwrap_or(usize::MAX)));
    Ok(tower_sse::response(SseBody::new(events)))
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
