//! The hub's Redis Streams backend (feature `redis`): several servers share every topic.
//!
//! Each topic is one stream, `tower-sse:{NAME}`, bounded by an approximate `MAXLEN`, and one
//! key, `tower-sse:{NAME}:epoch`, holding the stream's epoch (the braces keep both in one
//! cluster slot). Publishing is one `XADD ... NOMKSTREAM MAXLEN ~ N`; the stream and its epoch
//! are made together, by a script, the first time and again whenever the stream is gone (Redis
//! lost its data, `FLUSHALL`): that new epoch's first entry announces it, so a reader sees the
//! change in order. Each node reads each stream once, on a connection of its own that blocks in
//! `XREAD` (never the shared one, and with a response timeout longer than the block), and
//! appends to the topic's log, from which the hub fans out. Clients that resume from further
//! back than a node's log reach read from Redis with `XRANGE`, at most
//! [`CATCH_UP_READS`] of them at a time per hub (the others wait their turn).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use redis::{
    aio::MultiplexedConnection,
    streams::{StreamId, StreamRangeReply, StreamReadReply},
    AsyncConnectionConfig, RedisResult,
};
use tokio::sync::Semaphore;

use super::{
    broker::{stored_event, BoxFuture, Broker, Gap, Page},
    lock, Feed, HubBuilder, PublishError,
};
use crate::{replay::IdScheme, Event, LastEventId};

/// How many catch-up reads (`XRANGE`) a hub runs at once: many clients resuming at the same
/// time wait for their turn rather than multiply the load on Redis.
pub const CATCH_UP_READS: usize = 8;

/// How long a reader's `XREAD` blocks before it checks the epoch and whether its topic is
/// still open.
const BLOCK: Duration = Duration::from_secs(2);

/// How many entries one `XREAD` or `XRANGE` returns at most.
const PAGE: usize = 512;

/// How long to wait for a connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a command other than a blocking read may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest and longest pause before trying Redis again.
const RETRY: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(1000));

/// Makes the stream and its epoch if the stream is gone (or the epoch is), and returns the
/// epoch. `KEYS`: stream, epoch key. `ARGV`: a fresh epoch to use if one is needed.
const ENSURE_EPOCH: &str = r"
local epoch = redis.call('GET', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  epoch = ARGV[1]
  redis.call('XADD', KEYS[1], '*', 'epoch', epoch)
  redis.call('SET', KEYS[2], epoch)
elseif not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
return epoch
";

impl HubBuilder {
    /// Keeps the topics' logs in Redis Streams, shared by every hub on the same Redis: an event
    /// published on any node reaches every subscriber on every node, once and in order, and a
    /// client resumes with its `Last-Event-ID` on any node. The stream of each topic is bounded
    /// by [`max_events`](HubBuilder::max_events) (approximately).
    ///
    /// Nothing connects here: topics connect in the background and keep trying while Redis is
    /// away (streams stay open and catch up once it is back), so the hub's topics must be made
    /// inside a tokio runtime.
    pub fn redis(mut self, client: redis::Client) -> Self {
        self.redis = Some(client);
        self
    }
}

/// The broker on this Redis, its streams bounded by `maxlen`.
pub(super) fn broker(client: redis::Client, maxlen: usize) -> Arc<dyn Broker> {
    Arc::new(RedisBroker(Arc::new(Inner {
        client,
        maxlen,
        shared: tokio::sync::Mutex::new(None),
        epochs: Mutex::new(HashMap::new()),
        catch_ups: Semaphore::new(CATCH_UP_READS),
    })))
}

/// The [`Broker`] on Redis Streams.
struct RedisBroker(Arc<Inner>);

struct Inner {
    client: redis::Client,
    maxlen: usize,
    /// The connection that publishing and catch-up reads share, once made.
    shared: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// The latest epoch this node knows of each topic, for the ids publishing returns.
    epochs: Mutex<HashMap<Box<str>, Box<str>>>,
    catch_ups: Semaphore,
}

/// The Redis keys of a topic.
struct Keys {
    stream: String,
    epoch: String,
}

impl Keys {
    fn new(topic: &str) -> Keys {
        Keys {
            stream: format!("tower-sse:{{{topic}}}"),
            epoch: format!("tower-sse:{{{topic}}}:epoch"),
        }
    }
}

/// A stream id (`MS-SEQ`) as a log key.
fn key_of(id: &str) -> Option<u128> {
    let (ms, seq) = id.split_once('-')?;
    Some(u128::from(ms.parse::<u64>().ok()?) << 64 | u128::from(seq.parse::<u64>().ok()?))
}

/// A log key as a stream id.
fn stream_id(key: u128) -> String {
    format!("{}-{}", key >> 64, key as u64)
}

impl Inner {
    /// The shared connection, made if there is none.
    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        let mut shared = self.shared.lock().await;
        if let Some(connection) = &*shared {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *shared = Some(connection.clone());
        Ok(connection)
    }

    /// Drops the shared connection after an error, so the next command makes a new one.
    async fn forget_connection(&self) {
        *self.shared.lock().await = None;
    }

    fn remember_epoch(&self, topic: &str, epoch: &str) {
        lock(&self.epochs).insert(topic.into(), epoch.into());
    }

    fn known_epoch(&self, topic: &str) -> Option<Box<str>> {
        lock(&self.epochs).get(topic).cloned()
    }

    /// Publishes in one round trip once the stream exists (a second, rare one makes it).
    async fn publish(&self, topic: &str, encoded: Bytes) -> Result<LastEventId, PublishError> {
        let result = self.try_publish(topic, &encoded).await;
        if result.is_err() {
            self.forget_connection().await;
        }
        result.map_err(PublishError::new)
    }

    async fn try_publish(&self, topic: &str, encoded: &[u8]) -> RedisResult<LastEventId> {
        let keys = Keys::new(topic);
        let mut connection = self.connection().await?;
        for _ in 0..2 {
            let id: Option<String> = redis::cmd("XADD")
                .arg(&keys.stream)
                .arg("NOMKSTREAM")
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg("*")
                .arg("d")
                .arg(encoded)
                .query_async(&mut connection)
                .await?;
            let epoch = match (id.is_some(), self.known_epoch(topic)) {
                (true, Some(epoch)) => epoch,
                _ => {
                    // The stream is gone (or this node never saw it): make it, in a new epoch.
                    let epoch = ensure_epoch(&keys, &mut connection).await?;
                    self.remember_epoch(topic, &epoch);
                    epoch
                }
            };
            if let Some(key) = id.as_deref().and_then(key_of) {
                return Ok(LastEventId::issued(IdScheme::Stream.format(&epoch, key)));
            }
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::ResponseError,
            "the stream vanished again as it was made",
        )))
    }

    /// One page of a catch-up read (see [`Broker::fetch`]).
    async fn try_fetch(
        &self,
        topic: &str,
        epoch: &str,
        key: u128,
        including: bool,
    ) -> RedisResult<Page> {
        let keys = Keys::new(topic);
        let start = if including {
            stream_id(key)
        } else {
            format!("({}", stream_id(key))
        };
        let mut connection = self.connection().await?;
        let (current, range): (Option<String>, StreamRangeReply) = redis::pipe()
            .cmd("GET")
            .arg(&keys.epoch)
            .cmd("XRANGE")
            .arg(&keys.stream)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut connection)
            .await?;
        if current.as_deref() != Some(epoch) {
            return Ok(Err(Gap));
        }
        let mut entries = range.ids.into_iter().peekable();
        if including {
            // The client's own last event must still be there: else what came right after
            // it may have been trimmed too.
            match entries.next() {
                Some(first) if key_of(&first.id) == Some(key) => {}
                _ => return Ok(Err(Gap)),
            }
        }
        let events = entries
            .filter_map(|entry| {
                let (key, encoded) = data_of(&entry)?;
                let event = stored_event(&encoded, &IdScheme::Stream.format(epoch, key))?;
                Some((key, event))
            })
            .collect();
        Ok(Ok(events))
    }
}

/// The key and stored event of an entry, unless it is an epoch's first entry (or not one of
/// ours).
fn data_of(entry: &StreamId) -> Option<(u128, Bytes)> {
    let key = key_of(&entry.id)?;
    let data: Vec<u8> = entry.get("d")?;
    Some((key, Bytes::from(data)))
}

/// The epoch of the topic's stream, both made if the stream is gone.
async fn ensure_epoch(
    keys: &Keys,
    connection: &mut MultiplexedConnection,
) -> RedisResult<Box<str>> {
    let epoch: String = redis::cmd("EVAL")
        .arg(ENSURE_EPOCH)
        .arg(2)
        .arg(&keys.stream)
        .arg(&keys.epoch)
        .arg(&*crate::replay::new_epoch())
        .query_async(connection)
        .await?;
    Ok(epoch.into_boxed_str())
}

impl Broker for RedisBroker {
    fn publish(&self, topic: &str, event: &Event) -> BoxFuture<Result<LastEventId, PublishError>> {
        let inner = Arc::clone(&self.0);
        let topic: Box<str> = topic.into();
        let encoded = event.to_bytes();
        Box::pin(async move { inner.publish(&topic, encoded).await })
    }

    fn fetch(&self, topic: &str, epoch: &str, key: u128, including: bool) -> BoxFuture<Page> {
        let inner = Arc::clone(&self.0);
        let (topic, epoch): (Box<str>, Box<str>) = (topic.into(), epoch.into());
        Box::pin(async move {
            let _turn = inner.catch_ups.acquire().await;
            let mut pause = RETRY.0;
            loop {
                match inner.try_fetch(&topic, &epoch, key, including).await {
                    Ok(page) => return page,
                    Err(_) => {
                        // Redis is away: the client waits (its stream stays open).
                        inner.forget_connection().await;
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(RETRY.1);
                    }
                }
            }
        })
    }

    fn follow(&self, feed: Feed) {
        tokio::spawn(follow(Arc::clone(&self.0), feed));
    }
}

/// A node's reader of one topic's stream: appends what Redis holds to the topic's log, in
/// order, until the topic is closed; reconnects whenever the connection fails.
async fn follow(inner: Arc<Inner>, feed: Feed) {
    let Some(topic) = feed.name() else { return };
    let keys = Keys::new(&topic);
    // The key of the latest entry appended, once the reader has started.
    let mut cursor = None;
    let mut pause = RETRY.0;
    while !feed.is_closed() {
        match read_stream(&inner, &feed, &topic, &keys, &mut cursor, &mut pause).await {
            Ok(()) => return,
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY.1);
            }
        }
    }
}

/// Reads on one connection until the topic is closed (`Ok`) or the connection fails.
async fn read_stream(
    inner: &Inner,
    feed: &Feed,
    topic: &str,
    keys: &Keys,
    cursor: &mut Option<u128>,
    pause: &mut Duration,
) -> RedisResult<()> {
    // Its own connection: a blocking read would hold up every command multiplexed with it.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(BLOCK + RESPONSE_TIMEOUT);
    let mut connection = inner
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("tower-sse-reader")
        .query_async::<()>(&mut connection)
        .await?;
    loop {
        let epoch = ensure_epoch(keys, &mut connection).await?;
        inner.remember_epoch(topic, &epoch);
        *pause = RETRY.0;
        if cursor.is_none() || *feed.epoch() != *epoch {
            // Start after the stream's latest entry: older ones are read on demand.
            let latest: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(&keys.stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut connection)
                .await?;
            let latest = latest
                .ids
                .first()
                .and_then(|entry| key_of(&entry.id))
                .unwrap_or(0);
            feed.start_epoch(&epoch, latest);
            *cursor = Some(latest);
        }
        // Read until the epoch changes under it.
        loop {
            if feed.is_closed() {
                return Ok(());
            }
            let after = stream_id(cursor.unwrap_or(0));
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(PAGE)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&keys.stream)
                .arg(after)
                .query_async(&mut connection)
                .await?;
            let entries = reply
                .into_iter()
                .flat_map(|reply| reply.keys)
                .flat_map(|key| key.ids);
            let mut batch = Vec::new();
            let mut read_any = false;
            for entry in entries {
                read_any = true;
                let Some(key) = key_of(&entry.id) else {
                    continue;
                };
                *cursor = Some(key);
                if let Some(announced) = entry.get::<String>("epoch") {
                    if *announced != *feed.epoch() {
                        // A new epoch begins: Redis lost the old one.
                        feed.append(std::mem::take(&mut batch));
                        feed.start_epoch(&announced, key);
                        inner.remember_epoch(topic, &announced);
                    }
                } else if let Some(data) = data_of(&entry) {
                    batch.push(data);
                }
            }
            feed.append(batch);
            if !read_any {
                // Quiet for a while: check that the stream is still the one being read.
                let current: Option<String> = redis::cmd("GET")
                    .arg(&keys.epoch)
                    .query_async(&mut connection)
                    .await?;
                if current.as_deref() != Some(&*feed.epoch()) {
                    break;
                }
            }
        }
    }
}
