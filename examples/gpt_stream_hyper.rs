//! `POST /gpt-stream` on plain hyper 1 + hyper-util + tower (no framework): a GPT-style answer
//! streamed piece by piece as Server-Sent Events, with the page at `/` to try it in a browser.
//!
//! ```sh
//! cargo run --features llm --example gpt_stream_hyper
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

use std::convert::Infallible;

use bytes::Bytes;
use common::{ApiError, Config, Model};
use http::{Method, Request, Response};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tower::{ServiceBuilder, ServiceExt};
use tower_sse::BoxError;

/// Every response body, boxed: an event stream or a small fixed body (the page, a JSON error).
/// (CORS answers preflight requests itself, with an empty body of this type.)
type Body = UnsyncBoxBody<Bytes, BoxError>;

fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let config = Config::from_env_and_args();
    common::init_tracing();
    let (guard, shutdown) = common::guard_and_shutdown();

    // The whole app as one tower service: the router inside CORS, inside the SSE layer
    // (keep-alives, SSE headers, ending streams on shutdown).
    let model = config.model();
    // The OpenAI- and Anthropic-compatible API under /v1/, with its own SSE layer (common/llm).
    let api = common::llm::service(&config, model.clone(), shutdown.token());
    let feed = common::events::Feed::start();
    let app = ServiceBuilder::new()
        .layer(common::sse_layer(shutdown.token()))
        .layer(config.cors())
        .service_fn(move |request: Request<Incoming>| route(request, model.clone(), feed.clone()));

    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);

    // Tracks open connections so that Ctrl-C or SIGTERM can let them finish. Open event
    // streams end at once, ended by the layer; connections still open after the shutdown
    // grace are closed by the guard.
    let graceful = GracefulShutdown::new();
    let signalled = shutdown.token();
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = signalled.cancelled() => break,
        };
        // The guard closes the connection if its client stops reading; its handle goes into
        // every request so that the layer can have it closed when a stream cannot end.
        let io = guard.wrap(stream);
        let handle = io.handle();
        // hyper calls services with `&self`; a tower service is called through a clone.
        let (app, api) = (app.clone(), api.clone());
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(handle.clone());
            let (app, api) = (app.clone(), api.clone());
            async move {
                if request.uri().path().starts_with("/v1/") {
                    api.oneshot(request)
                        .await
                        .map(|response| response.map(boxed))
                } else {
                    app.oneshot(request)
                        .await
                        .map(|response| response.map(boxed))
                }
            }
        });
        // HTTP/1.1 or HTTP/2, whichever the client speaks.
        let connection = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!("connection ended with an error: {error}");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// Routes a request by hand: the API, or else the page and its script.
async fn route(
    request: Request<Incoming>,
    model: Model,
    feed: common::events::Feed,
) -> Result<Response<Body>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        // The live feed, resumable with `Last-Event-ID`.
        (&Method::GET, "/events") => {
            match common::events::respond(&feed, request.uri().query(), request.headers()) {
                Ok(response) => response.map(boxed),
                Err(error) => error.into_http_response().map(boxed),
            }
        }
        (&Method::POST, "/gpt-stream") => match common::read_ask(request).await {
            Ok(ask) => {
                // Like the Spring handler: make an emitter, hand it to a task that produces
                // the answer, and return at once. The response streams while the task sends.
                let (emitter, body) = tower_sse::channel(common::CHANNEL_CAPACITY);
                tokio::spawn(common::stream_answer(emitter, ask, model));
                // 200 with the event-stream headers.
                tower_sse::response(boxed(body))
            }
            Err(error) => error.into_http_response().map(boxed),
        },
        (_, "/gpt-stream") => ApiError::method_not_allowed()
            .into_http_response()
            .map(boxed),
        // Ollama's chat API (NDJSON), and the answer in the other framings.
        (&Method::POST, "/api/chat") => common::ollama::chat(request, model).await,
        (&Method::POST, path) if path.starts_with("/stream/") => {
            let framing = path["/stream/".len()..].to_owned();
            common::streams::respond(request, &framing, model).await
        }
        (method, path) => common::static_file(method, path).map(boxed),
    };
    Ok(response)
}
