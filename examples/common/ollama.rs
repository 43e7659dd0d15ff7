//! `POST /api/chat`: Ollama's chat endpoint, answered by the stand-in model, so that the
//! official `ollama` clients (Python and JavaScript) can be pointed at the example.
//!
//! The request is Ollama's: `{"model": "...", "messages": [{"role": "user", "content": "..."}],
//! "stream": true}`. The model echoes the last user message. With `"stream": true` (Ollama's
//! default when the field is missing) the answer is NDJSON in Ollama's shape: one line per
//! piece, each with `model`, `created_at`, `message.role` and `message.content`, then a final
//! line with `"done": true`, `done_reason` and the usual counters; a failure mid-stream is an
//! `{"error": "..."}` line. With `"stream": false` (what the clients send unless told to
//! stream) it is one JSON object holding the whole answer. Errors before streaming are a
//! status with `{"error": "..."}`, as Ollama answers them.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use tower_sse::{framing::Ndjson, BoxError, ChannelBuilder, Emitter};
use tracing::info;

use super::{read_limited_body, streams::send_pieces, streams::StreamBody, ApiError, Model};

/// What the clients send; other fields (`options`, `format`, `tools`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: Option<String>,
    #[serde(default)]
    messages: Vec<Message>,
    stream: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: String,
}

/// One line of the answer, or the whole of it.
#[derive(Serialize)]
struct ChatResponse<'a> {
    model: &'a str,
    created_at: String,
    message: Message,
    done: bool,
    #[serde(flatten)]
    totals: Option<Totals>,
}

/// What the last object carries: why the answer ended and Ollama's counters (durations in
/// nanoseconds).
#[derive(Serialize)]
struct Totals {
    done_reason: &'static str,
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: usize,
    prompt_eval_duration: u64,
    eval_count: usize,
    eval_duration: u64,
}

impl<'a> ChatResponse<'a> {
    fn new(model: &'a str, content: String) -> Self {
        ChatResponse {
            model,
            created_at: now_rfc3339(),
            message: Message {
                role: "assistant".to_owned(),
                content,
            },
            done: false,
            totals: None,
        }
    }

    fn done(mut self, started: Instant, prompt: &str, pieces: usize) -> Self {
        let total = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.done = true;
        self.totals = Some(Totals {
            done_reason: "stop",
            total_duration: total,
            load_duration: 0,
            prompt_eval_count: prompt.chars().count(),
            prompt_eval_duration: 0,
            eval_count: pieces,
            eval_duration: total,
        });
        self
    }
}

/// Answers `POST /api/chat`.
pub async fn chat<B>(request: Request<B>, model: Model) -> Response<StreamBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let chat = match read_chat(request).await {
        Ok(chat) => chat,
        Err(err) => return error(err),
    };
    let name = chat.model.unwrap_or_default();
    // The stand-in answers the last thing the user said.
    let prompt = chat
        .messages
        .into_iter()
        .rev()
        .find(|message| message.role == "user")
        .map(|message| message.content)
        .unwrap_or_default();
    let total = prompt.chars().count();
    let stream = chat.stream.unwrap_or(true);
    info!(total, stream, model = name, "answering a chat");
    let pieces = model.answer(&prompt);
    if stream {
        // A failure mid-stream becomes Ollama's `{"error": "..."}` line.
        let (emitter, body) = ChannelBuilder::framed(Ndjson, super::CHANNEL_CAPACITY)
            .error_event(true)
            .build();
        tokio::spawn(stream_chat(emitter, name, prompt, pieces));
        return tower_sse::framed_response(body).map(BodyExt::boxed_unsync);
    }
    // One object: the whole answer. Dropping this future (the client left) stops the model.
    let started = Instant::now();
    let mut content = String::new();
    let mut count = 0;
    let mut pieces = pieces;
    while let Some(piece) = pieces.next().await {
        match piece {
            Ok(piece) => {
                content.push_str(&piece);
                count += 1;
            }
            Err(err) => {
                return error(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    err.to_string(),
                ))
            }
        }
    }
    info!(total = count, "answer complete");
    let answer = ChatResponse::new(&name, content).done(started, &prompt, count);
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&answer).unwrap_or_default(),
    )
}

/// Streams the answer as Ollama's NDJSON chunks, then the final `"done": true` object.
async fn stream_chat(
    emitter: Emitter<Ndjson>,
    name: String,
    prompt: String,
    pieces: super::model::Pieces,
) {
    let started = Instant::now();
    let Some(sent) = send_pieces(&emitter, pieces, |piece| ChatResponse::new(&name, piece)).await
    else {
        return;
    };
    let last = ChatResponse::new(&name, String::new()).done(started, &prompt, sent);
    if emitter.send(last).await.is_ok() {
        emitter.complete();
        info!(total = sent, "answer complete");
    }
}

/// Reads and checks the request as Ollama does: JSON, with a `model`.
async fn read_chat<B>(request: Request<B>) -> Result<ChatRequest, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let bytes = read_limited_body(request).await?;
    let chat: ChatRequest = serde_json::from_slice(&bytes).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid chat request: {err}"),
        )
    })?;
    if chat.model.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "model is required"));
    }
    Ok(chat)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<StreamBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(BoxError::from)
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn error(err: ApiError) -> Response<StreamBody> {
    err.into_http_response()
        .map(|body| body.map_err(BoxError::from).boxed_unsync())
}

/// The current time as RFC 3339 in UTC with nanoseconds, as Ollama writes `created_at`.
fn now_rfc3339() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_nanos()
    )
}

/// The Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
