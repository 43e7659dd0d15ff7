//! The OpenAI- and Anthropic-compatible API of the examples: `POST /v1/chat/completions`
//! (streamed or not), `POST /v1/responses` and `POST /v1/messages` (streamed), answered by the
//! stand-in model in each provider's own wire format, so that the official SDKs can use it.
//!
//! * Requests are checked the way the providers check them, and refused with their status
//!   codes and error shapes (400 bad request, 401 no API key, 404 unknown model or path).
//! * The model `echo` echoes the last user message; `echo-fail` fails after a few pieces, so
//!   that clients can see a mid-stream error in the provider's format.
//! * A client that goes away stops the generation at once (logged as `stopped generating`).
//! * These routes get their own [`SseLayer`]: keep-alives are `:` comments, and nothing the
//!   layer writes is plain text. On shutdown the routes end each stream themselves with the
//!   provider's error, as the SDKs would otherwise take the cut stream for a complete answer.

mod anthropic;
mod openai;
mod request;

use std::{
    convert::Infallible,
    env,
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceBuilder};
use tower_sse::{layer::ResponseBody, llm::StreamError, BoxError, CloseReason, SseLayer};
use tracing::info;

use super::{Config, Model, CHANNEL_CAPACITY, KEEP_ALIVE};

/// Every body these routes answer with: an event stream or a JSON document.
pub type ApiBody = UnsyncBoxBody<Bytes, BoxError>;

/// The model that answers by echoing the last user message.
pub const ECHO_MODEL: &str = "echo";

/// The model that fails on purpose after [`FAIL_AFTER`] pieces.
pub const FAILING_MODEL: &str = "echo-fail";

/// How many pieces [`FAILING_MODEL`] sends before it fails.
pub const FAIL_AFTER: usize = 3;

/// The API as one tower service, for any request body type: the routes inside CORS, inside
/// their own [`SseLayer`]. `shutdown` ends open streams with the provider's error.
pub fn service<B>(
    config: &Config,
    model: Model,
    shutdown: CancellationToken,
) -> impl Service<
    Request<B>,
    Response = Response<ResponseBody<ApiBody>>,
    Error = Infallible,
    Future: Send,
> + Clone
       + Send
       + Sync
       + 'static
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    ServiceBuilder::new()
        .layer(sse_layer())
        .layer(config.cors())
        .service_fn(move |request: Request<B>| {
            let (model, shutdown) = (model.clone(), shutdown.clone());
            async move { Ok::<_, Infallible>(route(request, model, shutdown).await) }
        })
}

/// Keep-alive comments only: no shutdown or time-limit event, which the SDKs would try to
/// decode as JSON. `KEEP_ALIVE_MS` changes the interval (tests shorten it); like the other
/// settings, a bad value stops the server at startup rather than running with a surprise.
fn sse_layer() -> SseLayer {
    let interval = match env::var("KEEP_ALIVE_MS") {
        Err(_) => KEEP_ALIVE,
        Ok(ms) => match ms.parse() {
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => {
                eprintln!("error: KEEP_ALIVE_MS={ms:?} is not a number of milliseconds");
                std::process::exit(2);
            }
        },
    };
    SseLayer::new().keep_alive(interval).on_close(|info| {
        info!(
            events = info.events,
            bytes = info.bytes,
            "api response finished after {:?}: {}",
            info.duration,
            info.reason
        );
    })
}

async fn route<B>(
    request: Request<B>,
    model: Model,
    shutdown: CancellationToken,
) -> Response<ApiBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let is_post = request.method() == Method::POST;
    match request.uri().path() {
        "/v1/chat/completions" if is_post => {
            openai::chat_completions(request, model, shutdown).await
        }
        "/v1/responses" if is_post => openai::responses(request, model, shutdown).await,
        "/v1/messages" if is_post => anthropic::messages(request, model, shutdown).await,
        "/v1/messages" => anthropic::refuse(request::method_not_allowed()),
        "/v1/chat/completions" | "/v1/responses" => openai::refuse(request::method_not_allowed()),
        path => openai::refuse(request::Refusal::new(
            StatusCode::NOT_FOUND,
            request::Kind::InvalidRequest,
            format!("Invalid URL ({} {path})", request.method()),
        )),
    }
}

/// A JSON answer with this status.
fn json_response(status: StatusCode, body: Bytes) -> Response<ApiBody> {
    let mut response = Response::new(boxed(Full::new(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An event-stream answer.
fn stream_response(body: tower_sse::SseBody<tower_sse::EventReceiver>) -> Response<ApiBody> {
    tower_sse::response(boxed(body))
}

fn boxed<B>(body: B) -> ApiBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A new channel for one streamed answer.
fn channel() -> (
    tower_sse::SseEmitter,
    tower_sse::SseBody<tower_sse::EventReceiver>,
) {
    tower_sse::channel(CHANNEL_CAPACITY)
}

/// A fresh id with this prefix (`chatcmpl-`, `resp_`, `msg_`...), unique in the process.
fn new_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{prefix}{:016x}{:08x}",
        unix_time(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Seconds since the Unix epoch.
fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// One answer to generate: the query, which model, and how many pieces at most.
struct Job {
    query: String,
    failing: bool,
    max_pieces: Option<usize>,
}

impl Job {
    /// What the (stand-in) tokenizer counts for the prompt: one token per character.
    fn prompt_tokens(&self) -> usize {
        self.query.chars().count()
    }
}

/// How a generation ended.
enum Outcome {
    /// The model said everything, or `limited`: the request's piece limit cut it short.
    Finished { pieces: usize, limited: bool },
    /// The model failed; the client should see this message in the provider's error shape.
    Failed(String),
    /// The server is shutting down: the stream should end with the provider's error.
    ShuttingDown,
    /// The stream is over already (the client left): nothing more can be written.
    Gone,
}

/// What a protocol does with each piece of the answer.
trait Writer {
    /// Writes one piece.
    fn piece(&mut self, text: &str) -> impl Future<Output = Result<(), StreamError>> + Send;
    /// Resolves once the response is over.
    fn closed(&self) -> impl Future<Output = CloseReason> + Send;
}

/// Runs the stand-in model for `job`, writing each piece as it comes, and stops at once when
/// the client leaves, the model fails or the server shuts down.
async fn generate<W: Writer + Send>(
    writer: &mut W,
    job: &Job,
    model: &Model,
    shutdown: &CancellationToken,
    protocol: &'static str,
) -> Outcome {
    let total = job.query.chars().count();
    info!(
        protocol,
        total,
        failing = job.failing,
        "streaming an answer"
    );
    let mut pieces = model.answer(&job.query);
    let mut sent = 0;
    loop {
        if job.failing && sent == FAIL_AFTER {
            info!(sent, total, "failing on purpose");
            return Outcome::Failed(format!(
                "the model {FAILING_MODEL} failed on purpose after {FAIL_AFTER} pieces"
            ));
        }
        if job.max_pieces.is_some_and(|max| sent >= max) {
            return Outcome::Finished {
                pieces: sent,
                limited: true,
            };
        }
        let piece = tokio::select! {
            reason = writer.closed() => return stopped(reason, sent, total),
            () = shutdown.cancelled() => return shutting_down(sent, total),
            piece = pieces.next() => piece,
        };
        let piece = match piece {
            None => break,
            Some(Ok(piece)) => piece,
            Some(Err(error)) => return Outcome::Failed(error.to_string()),
        };
        // A slow reader makes the write wait for room; a shutdown does not wait for it.
        let written = tokio::select! {
            written = writer.piece(&piece) => written,
            () = shutdown.cancelled() => return shutting_down(sent, total),
        };
        if let Err(error) = written {
            return stopped(error, sent, total);
        }
        sent += 1;
    }
    info!(total, "answer complete");
    Outcome::Finished {
        pieces: sent,
        limited: false,
    }
}

/// Logs that the model stopped for a shutdown.
fn shutting_down(sent: usize, total: usize) -> Outcome {
    info!(
        sent,
        total, "stopped generating: the server is shutting down"
    );
    Outcome::ShuttingDown
}

/// Logs why the model stopped before the end of its answer.
fn stopped(why: impl std::fmt::Display, sent: usize, total: usize) -> Outcome {
    info!(sent, total, "stopped generating: {why}");
    Outcome::Gone
}

/// Collects the answer of a request that does not stream. Its client cannot leave without
/// the request's future, and so the generation, being dropped.
struct Collect(String);

impl Writer for Collect {
    async fn piece(&mut self, text: &str) -> Result<(), StreamError> {
        self.0.push_str(text);
        Ok(())
    }

    async fn closed(&self) -> CloseReason {
        std::future::pending().await
    }
}
