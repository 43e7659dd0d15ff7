//! `POST /gpt-stream` on axum: a GPT-style answer streamed piece by piece as Server-Sent Events,
//! with the page at `/` to try it in a browser.
//!
//! ```sh
//! cargo run --all-features --example gpt_stream_axum
//! # then open http://127.0.0.1:8080/ or:
//! curl -N -H 'Content-Type: application/json' -d '{"query": "Hello"}' http://127.0.0.1:8080/gpt-stream
//! ```
//!
//! `PORT` or `--port` change the port, `GPT_DELAY_MS` the pause between pieces (default 50),
//! and `ALLOWED_ORIGINS` (comma-separated, or `*`) lets pages from other origins call the API.
//!
//! `GET /events` is a live feed that a client resumes with `Last-Event-ID` (see
//! `common/events.rs`); `EVENTS_INTERVAL_MS` sets its pace (default 1000).
//!
//! With the `client` feature, `UPSTREAM_URL` (and `UPSTREAM_MODEL`, `UPSTREAM_API_KEY`) make it
//! a gateway that streams an OpenAI-compatible server's answers instead (see
//! `common/upstream.rs`).
//! `POST /v1/chat/completions`, `/v1/responses` and `/v1/messages` speak the OpenAI and
//! Anthropic APIs, so their official SDKs work against this server (see `common/llm`).
//! Ctrl-C or SIGTERM end every open stream with a `shutdown` event, and the process exits once
//! the connections are closed, at most `SHUTDOWN_GRACE_MS` later (default 5000), even if some
//! clients stopped reading.

mod common;

use axum::{
    extract::{FromRequest, Path, Request, State},
    http::{HeaderMap, Method, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use common::{ApiError, Ask, Config, Model};
use tower_sse::{ConnectionHandle, EventReceiver, SseBody};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let config = Config::from_env_and_args();
    common::init_tracing();
    let (guard, shutdown) = common::guard_and_shutdown();

    let feed = common::events::Feed::start();
    let app = Router::new()
        .route(
            "/gpt-stream",
            post(gpt_stream).fallback(|| async { ApiError::method_not_allowed() }),
        )
        // The live feed, resumable with `Last-Event-ID`.
        .route(
            "/events",
            get(move |uri: Uri, headers: HeaderMap| {
                std::future::ready(common::events::respond(&feed, uri.query(), &headers))
            }),
        )
        // Ollama's chat API (NDJSON), and the answer in the other framings.
        .route(
            "/api/chat",
            post(|State(model): State<Model>, request: Request| async move {
                common::ollama::chat(request, model).await.map(axum::body::Body::new)
            }),
        )
        .route(
            "/stream/{framing}",
            post(
                |State(model): State<Model>, Path(framing): Path<String>, request: Request| async move {
                    common::streams::respond(request, &framing, model)
                        .await
                        .map(axum::body::Body::new)
                },
            ),
        )
        // Everything else: the page and the script it loads.
        .fallback(
            |method: Method, uri: Uri| async move { common::static_file(&method, uri.path()) },
        )
        .with_state(config.model())
        // The last layer added is the outermost: the SSE layer (keep-alives, SSE headers,
        // ending streams on shutdown) around CORS, around the routes.
        .layer(config.cors())
        .layer(common::sse_layer(shutdown.token()))
        // The OpenAI- and Anthropic-compatible API, with its own SSE layer (common/llm).
        .merge(Router::new().route_service(
            "/v1/{*path}",
            common::llm::service(&config, config.model(), shutdown.token()),
        ));

    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    // Every connection guarded, and its handle in each request (as connect info), so that
    // streams whose client stopped reading still end; Ctrl-C or SIGTERM stop the server within
    // the shutdown grace.
    axum::serve(
        guard.listener(listener),
        app.into_make_service_with_connect_info::<ConnectionHandle>(),
    )
    .with_graceful_shutdown(shutdown.signalled())
    .await
}

/// Like the Spring handler: make an emitter, hand it to a task that produces the answer, and
/// return at once. The response streams while the task sends.
async fn gpt_stream(State(model): State<Model>, ask: Ask) -> SseBody<EventReceiver> {
    let (emitter, body) = tower_sse::channel(common::CHANNEL_CAPACITY);
    tokio::spawn(common::stream_answer(emitter, ask, model));
    // With the `axum` feature, the body is a response: 200 with the event-stream headers.
    body
}

/// Lets handlers take a validated [`Ask`] as an argument; bad input is answered with the
/// status and JSON error from [`common::read_ask`] before the handler runs.
impl<S: Send + Sync> FromRequest<S> for Ask {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Ask, ApiError> {
        common::read_ask(request).await
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_http_response().into_response()
    }
}
