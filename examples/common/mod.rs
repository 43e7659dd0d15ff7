//! What the axum and the hyper example share: configuration, request validation with JSON
//! error bodies, the browser page, CORS, and the stand-in "model" that streams the answer.
//!
//! Only the wiring differs between the two examples; everything here is framework-neutral
//! and speaks plain `http` types.

use std::{
    env, fmt,
    io::IsTerminal,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_sse::{BoxError, Event, EventName, Shutdown, SseEmitter, SseLayer, StallGuard};
use tracing::info;

pub mod events;
pub mod llm;
pub mod model;
pub mod ollama;
pub mod streams;
pub mod upstream;

pub use model::Model;

/// The largest request body `POST /gpt-stream` accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How often an idle stream gets a keep-alive comment, so that proxies do not cut it.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How many answer pieces may wait for a slow client before the model is made to wait.
pub const CHANNEL_CAPACITY: usize = 16;

/// Settings read from the command line and the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen: always 127.0.0.1, port 8080 unless `PORT` or `--port` say otherwise
    /// (0 picks a free port; the address actually bound is logged).
    pub addr: SocketAddr,
    /// The stand-in model's pause before each piece (`GPT_DELAY_MS`, default 50).
    pub delay: Duration,
    /// Origins other than the server's own whose pages may call `/gpt-stream`
    /// (`ALLOWED_ORIGINS`, comma-separated, or `*` for any).
    pub allowed_origins: AllowedOrigins,
    /// The OpenAI-compatible server that answers instead of the stand-in (`UPSTREAM_URL`,
    /// `UPSTREAM_MODEL`, `UPSTREAM_API_KEY`; see `upstream.rs`).
    pub upstream: Option<Box<upstream::Upstream>>,
}

/// Which cross-origin pages may call the API.
#[derive(Debug, Clone)]
pub enum AllowedOrigins {
    /// Any origin at all (`ALLOWED_ORIGINS=*`): handy in development only.
    Any,
    /// Exactly these origins, such as `http://localhost:3000`; empty means same-origin only.
    List(Vec<HeaderValue>),
}

impl Config {
    /// Reads `--port N` (or `--port=N`), then `PORT`, `GPT_DELAY_MS` and `ALLOWED_ORIGINS`.
    /// Exits with a message on a bad value rather than running with a surprise setting.
    pub fn from_env_and_args() -> Config {
        match Config::parse(env::args().skip(1)) {
            Ok(config) => config,
            Err(message) => {
                eprintln!("error: {message}");
                eprintln!(
                    "usage: [PORT=8080] [GPT_DELAY_MS=50] [ALLOWED_ORIGINS=http://a,http://b] \
                     [UPSTREAM_URL=http://host/v1 UPSTREAM_MODEL=name [UPSTREAM_API_KEY=key]] \
                     <example> [--port N]"
                );
                std::process::exit(2);
            }
        }
    }

    fn parse(mut args: impl Iterator<Item = String>) -> Result<Config, String> {
        // The flag wins over the environment variable.
        let mut port = env::var("PORT").ok();
        while let Some(arg) = args.next() {
            if arg == "--port" {
                port = Some(args.next().ok_or("--port needs a value")?);
            } else if let Some(value) = arg.strip_prefix("--port=") {
                port = Some(value.to_owned());
            } else {
                return Err(format!("unknown argument {arg:?}"));
            }
        }
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?,
            None => 8080,
        };

        let delay = match env::var("GPT_DELAY_MS") {
            Ok(ms) => Duration::from_millis(
                ms.parse()
                    .map_err(|_| format!("GPT_DELAY_MS={ms:?} is not a number of milliseconds"))?,
            ),
            Err(_) => Duration::from_millis(50),
        };

        let allowed_origins = match env::var("ALLOWED_ORIGINS") {
            Ok(list) if list.trim() == "*" => AllowedOrigins::Any,
            Ok(list) => AllowedOrigins::List(
                list.split(',')
                    .map(str::trim)
                    .filter(|origin| !origin.is_empty())
                    .map(|origin| {
                        HeaderValue::from_str(origin)
                            .map_err(|_| format!("{origin:?} in ALLOWED_ORIGINS is not an origin"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Err(_) => AllowedOrigins::List(Vec::new()),
        };

        Ok(Config {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            delay,
            allowed_origins,
            upstream: upstream::from_env()?.map(Box::new),
        })
    }

    /// The model that answers every route: the upstream if one is set, else the stand-in.
    pub fn model(&self) -> Model {
        let echo = Model::Echo { delay: self.delay };
        self.upstream.clone().map_or(echo, Model::Upstream)
    }

    /// CORS for pages served from another origin, as in the article where the page and the
    /// API live apart. The page sends `Content-Type: application/json`, which makes the
    /// browser ask first (a preflight); `Last-Event-ID` is allowed for clients that resume.
    pub fn cors(&self) -> CorsLayer {
        let origins = match &self.allowed_origins {
            AllowedOrigins::Any => AllowOrigin::any(),
            AllowedOrigins::List(list) => AllowOrigin::list(list.iter().cloned()),
        };
        let mut allow_headers = vec![
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ];
        // The official OpenAI and Anthropic SDKs, used from a browser, on the `/v1` routes.
        allow_headers.extend(
            SDK_HEADERS
                .iter()
                .map(|name| header::HeaderName::from_static(name)),
        );
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::POST])
            .allow_headers(allow_headers)
    }
}

/// The request headers the OpenAI and Anthropic SDKs send: credentials, API versions and
/// the `x-stainless-*` telemetry of both (CORS has no wildcard for a prefix, so all by name).
const SDK_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "openai-organization",
    "openai-project",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-custom-event-handler",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-raw-response",
    "x-stainless-read-timeout",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-stream-helper",
    "x-stainless-timeout",
];

/// Logs to stderr, at `info` unless `RUST_LOG` says otherwise; colours only on a terminal.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// How long open connections get to finish after Ctrl-C or SIGTERM before they are closed
/// (`SHUTDOWN_GRACE_MS`, default 5000).
fn shutdown_grace() -> Duration {
    env::var("SHUTDOWN_GRACE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis)
}

/// Completes on Ctrl-C or, on Unix, SIGTERM (what `kill`, systemd and Kubernetes send).
async fn stop_signal() {
    let ctrl_c = async {
        // Without a signal handler there is no graceful shutdown: the signal just kills.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The guard on every accepted connection (closes those whose client stopped reading) and the
/// shutdown it serves: on Ctrl-C or SIGTERM the server stops accepting, the [`SseLayer`] ends
/// every open stream cleanly, and whatever connection is still open after the grace is closed,
/// so the process exits within the grace whatever its clients do.
pub fn guard_and_shutdown() -> (StallGuard, Shutdown) {
    let guard = StallGuard::new();
    let shutdown = Shutdown::new(&guard).grace(shutdown_grace());
    tokio::spawn(shutdown.clone().run(async {
        stop_signal().await;
        info!("shutting down");
    }));
    (guard, shutdown)
}

/// The tower middleware around every response: keep-alives on idle streams, the SSE headers,
/// ending streams on shutdown (after a `shutdown` event, so a client can tell the stream was cut
/// short), and a log line as each response ends, with why.
pub fn sse_layer(shutdown: CancellationToken) -> SseLayer {
    SseLayer::new()
        .keep_alive(KEEP_ALIVE)
        .graceful_shutdown(shutdown)
        .shutdown_event(shutdown_event())
        .on_close(|info| {
            info!(
                events = info.events,
                bytes = info.bytes,
                "response finished after {:?}: {}",
                info.duration,
                info.reason
            );
        })
}

/// The last event of every complete answer: a stream that ends without it was cut short.
pub const DONE: EventName = EventName::new("done");

/// The last event of a stream the server ends because it is shutting down.
pub const SHUTDOWN: EventName = EventName::new("shutdown");

/// `event: done`, with empty data: what a client waits for before it calls an answer whole.
pub fn done_event() -> Event {
    Event::new().event_name(DONE).data("")
}

/// `event: shutdown`: what a client gets instead of `done` when the server stops mid-answer.
pub fn shutdown_event() -> Event {
    Event::new()
        .event_name(SHUTDOWN)
        .data("the server is shutting down")
}

// ---------------------------------------------------------------------------------------------
// The API: `POST /gpt-stream` with `{"query": "..."}`.
// ---------------------------------------------------------------------------------------------

/// A validated `POST /gpt-stream` request.
#[derive(Debug)]
pub struct Ask {
    /// The question; the stand-in model answers by echoing it.
    pub query: String,
    /// How each piece of the answer is written as event data.
    pub format: Format,
}

/// How each piece of the answer is written as event data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The default: the piece as a JSON string (`data: "H"`). Any text survives every client,
    /// newlines included; the client appends `JSON.parse(event.data)`.
    Json,
    /// `?format=text`: the raw piece (`data: H`), the client appends `event.data`, as in the
    /// article. Line breaks cannot all survive: `@microsoft/fetch-event-source` drops those at
    /// the start of a piece (a piece that is only "\n" arrives as ""), and SSE turns CR and
    /// CRLF into LF.
    Text,
}

/// Validates a `POST /gpt-stream` request and reads its body, for any body type (axum's or
/// hyper's). Nothing is streamed unless this succeeds, so bad input always gets a plain
/// status with a JSON error instead of a half-started event stream.
pub async fn read_ask<B>(request: Request<B>) -> Result<Ask, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let format = match request.uri().query() {
        None => Format::Json,
        Some(query) => parse_format(query)?,
    };

    let content_type = request.headers().get(header::CONTENT_TYPE);
    if !content_type.is_some_and(is_json) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected `Content-Type: application/json`",
        ));
    }

    let bytes = read_limited_body(request).await?;

    let mut json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid JSON: {error}"),
        )
    })?;
    // Well-formed JSON of the wrong shape is 422. Other fields are ignored.
    match json.get_mut("query").map(serde_json::Value::take) {
        Some(serde_json::Value::String(query)) => Ok(Ask { query, format }),
        Some(_) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`query` must be a string",
        )),
        None => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected a JSON object with a `query` string: {\"query\": \"...\"}",
        )),
    }
}

/// Reads a request body of at most [`MAX_BODY_BYTES`]: 413 for a larger one (refused before
/// reading when it is declared, or as soon as it passes the limit when chunked), 400 when it
/// cannot be read.
pub async fn read_limited_body<B>(request: Request<B>) -> Result<Bytes, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {MAX_BODY_BYTES} bytes"),
        )
    };
    // Refuse a declared oversize body before reading any of it...
    let declared = request.headers().get(header::CONTENT_LENGTH);
    if declared
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|length| length > MAX_BODY_BYTES as u64)
    {
        return Err(too_large());
    }
    // ...and stop reading an undeclared (chunked) one as soon as it passes the limit.
    match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "could not read the request body",
        )),
    }
}

/// Reads `format=json|text` from the query string; other parameters are ignored.
fn parse_format(query: &str) -> Result<Format, ApiError> {
    let mut format = Format::Json;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("format=") {
            format = match value {
                "json" => Format::Json,
                "text" => Format::Text,
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "`format` must be `json` or `text`",
                    ))
                }
            };
        }
    }
    Ok(format)
}

/// `application/json`, in any case, with or without parameters such as `charset=utf-8`.
fn is_json(content_type: &HeaderValue) -> bool {
    content_type
        .to_str()
        .ok()
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// A refused request: its status and a message, sent as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// Any method but `POST` on `/gpt-stream`.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST with a JSON body {\"query\": \"...\"}",
        )
    }

    /// The response: the status, `{"error": "..."}`, and `Allow: POST` on a 405.
    pub fn into_http_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut response = Response::new(Full::from(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

// ---------------------------------------------------------------------------------------------
// The page.
// ---------------------------------------------------------------------------------------------

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// Every file the server serves, built into the binary so `cargo run` is all it takes:
/// the page, and the ES modules of `@microsoft/fetch-event-source` it imports (an unmodified
/// copy of the npm package's `lib/esm`, MIT licence beside it).
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../page/index.html"),
    ),
    (
        "/fetch-event-source/index.js",
        JAVASCRIPT,
        include_str!("../page/fetch-event-source/index.js"),
    ),
    // The package's modules import "./fetch" and "./parse" without an extension, so these
    // are the URLs the browser asks for.
    (
        "/fetch-event-source/fetch",
        JAVASCRIPT,
        include_str!("../page/fetch-event-source/fetch.js"),
    ),
    (
        "/fetch-event-source/parse",
        JAVASCRIPT,
        include_str!("../page/fetch-event-source/parse.js"),
    ),
    (
        "/fetch-event-source/LICENSE",
        "text/plain; charset=utf-8",
        include_str!("../page/fetch-event-source/LICENSE"),
    ),
    // The page links it, so browsers ask for it instead of a missing /favicon.ico.
    (
        "/favicon.svg",
        "image/svg+xml",
        include_str!("../page/favicon.svg"),
    ),
];

/// Answers every request that is not for `/gpt-stream`: a file for `GET` or `HEAD` of a known
/// path, otherwise 404 or 405 with a JSON error.
pub fn static_file(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let Some(&(_, content_type, text)) = FILES.iter().find(|(file, _, _)| *file == path) else {
        return ApiError::new(StatusCode::NOT_FOUND, format!("no such page: {path}"))
            .into_http_response();
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response =
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "use GET").into_http_response();
        let allow = HeaderValue::from_static("GET, HEAD");
        response.headers_mut().insert(header::ALLOW, allow);
        return response;
    }
    let mut response = Response::new(Full::from(Bytes::from_static(text.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

// ---------------------------------------------------------------------------------------------
// The stand-in model.
// ---------------------------------------------------------------------------------------------

/// Streams the answer to `ask` through `emitter`, like the Spring handler's worker thread:
/// each piece of the model's answer as it comes, then `complete()`. It stops as soon as the
/// stream is over for any other reason (the client went away, the server is shutting down), so
/// no work is done for nobody.
pub async fn stream_answer(emitter: SseEmitter, ask: Ask, model: Model) {
    let total = ask.query.chars().count();
    info!(total, format = ?ask.format, "streaming an answer");

    let mut pieces = model.answer(&ask.query);
    let mut sent = 0;
    loop {
        // Wait for the model, but stop at once if the stream ends meanwhile.
        let piece = tokio::select! {
            reason = emitter.closed() => return stopped(reason, sent, total),
            piece = pieces.next() => piece,
        };
        let event = match piece {
            None => break,
            Some(Ok(piece)) => piece_event(&piece, ask.format),
            Some(Err(error)) => Err(error),
        };
        let event = match event {
            Ok(event) => event,
            // Like Spring's `completeWithError`: the client sees the stream fail.
            Err(error) => return emitter.complete_with_error(error),
        };
        if let Err(error) = emitter.send(event).await {
            // The event came back: the stream is over, and the error says why.
            return stopped(error, sent, total);
        }
        sent += 1;
    }

    // The answer is whole: say so, so that clients can tell it from a stream cut short.
    if let Err(error) = emitter.send(done_event()).await {
        return stopped(error, sent, total);
    }
    emitter.complete();
    info!(total, "answer complete");
}

/// The event for one piece of the answer.
fn piece_event(piece: &str, format: Format) -> Result<Event, BoxError> {
    match format {
        Format::Json => Ok(Event::new().json_data(piece)?),
        Format::Text => Ok(Event::new().data(piece)),
    }
}

/// Logs why the model stopped before the end of its answer.
fn stopped(why: impl fmt::Display, sent: usize, total: usize) {
    info!(sent, total, "stopped generating: {why}");
}
