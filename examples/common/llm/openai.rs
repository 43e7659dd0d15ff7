//! `POST /v1/chat/completions` and `POST /v1/responses`, as OpenAI answers them.

use http::{Request, Response, StatusCode};
use http_body::Body;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower_sse::{
    llm::{ChatCompletionStream, OpenAiError, ResponseStream, StreamError},
    BoxError, CloseReason,
};

use super::{
    channel, generate, json_response, new_id, request, stream_response, unix_time, ApiBody,
    Collect, Job, Outcome, Writer,
};
use crate::common::Model;
use request::{Kind, Refusal};

/// A refusal as OpenAI writes it: `{"error": {"message", "type", "param", "code"}}`.
pub fn refuse(refusal: Refusal) -> Response<ApiBody> {
    let kind = match refusal.kind {
        // OpenAI calls all of these invalid requests and tells them apart by status and code.
        Kind::InvalidRequest | Kind::Authentication | Kind::NotFound | Kind::TooLarge => {
            "invalid_request_error"
        }
    };
    let mut error = OpenAiError::new(kind, refusal.message);
    if let Some(param) = refusal.param {
        error = error.param(param);
    }
    if let Some(code) = refusal.code {
        error = error.code(code);
    }
    json_response(refusal.status, error.to_json())
}

const NO_API_KEY: &str = "You didn't provide an API key: send it as `Authorization: Bearer <key>`";

/// The checks both OpenAI routes make: the key, a JSON body, the model.
async fn read<B>(
    request: Request<B>,
) -> Result<(serde_json::Map<String, Value>, String, bool), Refusal>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    request::require_api_key(request.headers(), NO_API_KEY)?;
    let body = request::read_json(request).await?;
    let (model, failing) = request::model(&body)?;
    Ok((body, model, failing))
}

// ---------------------------------------------------------------------------------------------
// Chat Completions
// ---------------------------------------------------------------------------------------------

/// `POST /v1/chat/completions`: a `chat.completion.chunk` stream, or with `stream` false or
/// absent, one `chat.completion`.
pub async fn chat_completions<B>(
    request: Request<B>,
    model: Model,
    shutdown: CancellationToken,
) -> Response<ApiBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (body, name, failing) = match read(request).await {
        Ok(read) => read,
        Err(refusal) => return refuse(refusal),
    };
    let job = match chat_job(&body, failing) {
        Ok(job) => job,
        Err(refusal) => return refuse(refusal),
    };
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(options) => match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => {
                return refuse(Refusal::bad_param(
                    "stream_options.include_usage",
                    "`stream_options.include_usage` must be a boolean",
                ))
            }
        },
    };
    let stream = match request::stream_flag(&body) {
        Ok(stream) => stream,
        Err(refusal) => return refuse(refusal),
    };
    if !stream {
        return whole_chat_completion(&job, &model, &name, &shutdown).await;
    }

    let (emitter, body) = channel();
    let chunks = ChatCompletionStream::new(emitter, new_id("chatcmpl-"), name, unix_time())
        .include_usage(include_usage);
    tokio::spawn(stream_chat(chunks, include_usage, job, model, shutdown));
    stream_response(body)
}

fn chat_job(body: &serde_json::Map<String, Value>, failing: bool) -> Result<Job, Refusal> {
    let query = request::last_user_text(body.get("messages"), "messages")?;
    match body.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(Refusal::bad_param(
                "n",
                "this server writes one choice: `n` must be 1",
            ))
        }
    }
    // The newer name wins over the older one.
    let max_pieces = match request::limit(body, "max_completion_tokens")? {
        Some(max) => Some(max),
        None => request::limit(body, "max_tokens")?,
    };
    Ok(Job {
        query,
        failing,
        max_pieces,
    })
}

impl Writer for ChatCompletionStream {
    async fn piece(&mut self, text: &str) -> Result<(), StreamError> {
        self.content(text).await
    }

    async fn closed(&self) -> CloseReason {
        ChatCompletionStream::closed(self).await
    }
}

async fn stream_chat(
    mut chunks: ChatCompletionStream,
    include_usage: bool,
    job: Job,
    model: Model,
    shutdown: CancellationToken,
) {
    let outcome = generate(&mut chunks, &job, &model, &shutdown, "chat.completions").await;
    let ended = match outcome {
        Outcome::Finished { pieces, limited } => {
            let reason = if limited { "length" } else { "stop" };
            let usage = include_usage.then(|| usage(&job, pieces));
            finish_chat(&mut chunks, reason, usage.as_ref()).await
        }
        Outcome::Failed(message) => chunks.fail(&model_error(message)).await,
        Outcome::ShuttingDown => chunks.fail(&shutting_down()).await,
        Outcome::Gone => Ok(()),
    };
    if let Err(error) = ended {
        tracing::info!("the answer's end was not written: {error}");
    }
}

/// The finish chunk, the usage chunk if the request asked for it, `[DONE]`.
async fn finish_chat(
    chunks: &mut ChatCompletionStream,
    reason: &str,
    usage: Option<&Value>,
) -> Result<(), StreamError> {
    chunks.finish(0, reason).await?;
    if let Some(usage) = usage {
        chunks.usage(usage).await?;
    }
    chunks.done().await
}

/// OpenAI's usage object for a chat completion.
fn usage(job: &Job, pieces: usize) -> Value {
    json!({
        "prompt_tokens": job.prompt_tokens(),
        "completion_tokens": pieces,
        "total_tokens": job.prompt_tokens() + pieces,
    })
}

fn model_error(message: String) -> OpenAiError {
    OpenAiError::new("server_error", message).code("model_error")
}

fn shutting_down() -> OpenAiError {
    OpenAiError::new(
        "server_error",
        "The server is shutting down: retry the request",
    )
    .code("server_shutting_down")
}

/// The whole answer as one `chat.completion` (`application/json`, which openai-node needs to
/// parse it).
async fn whole_chat_completion(
    job: &Job,
    model: &Model,
    name: &str,
    shutdown: &CancellationToken,
) -> Response<ApiBody> {
    let mut answer = Collect(String::new());
    let (pieces, limited) =
        match generate(&mut answer, job, model, shutdown, "chat.completions").await {
            Outcome::Finished { pieces, limited } => (pieces, limited),
            Outcome::Failed(message) => {
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    model_error(message).to_json(),
                )
            }
            Outcome::ShuttingDown | Outcome::Gone => {
                return json_response(StatusCode::SERVICE_UNAVAILABLE, shutting_down().to_json())
            }
        };
    let completion = json!({
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": unix_time(),
        "model": name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.0, "refusal": null},
            "logprobs": null,
            "finish_reason": if limited { "length" } else { "stop" },
        }],
        "usage": usage(job, pieces),
    });
    json_response(StatusCode::OK, completion.to_string().into())
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// `POST /v1/responses` with `"stream": true`: the `response.*` event stream. (This server
/// only streams responses.)
pub async fn responses<B>(
    request: Request<B>,
    model: Model,
    shutdown: CancellationToken,
) -> Response<ApiBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (body, name, failing) = match read(request).await {
        Ok(read) => read,
        Err(refusal) => return refuse(refusal),
    };
    let job = match response_job(&body, failing) {
        Ok(job) => job,
        Err(refusal) => return refuse(refusal),
    };
    match request::stream_flag(&body) {
        Ok(true) => {}
        Ok(false) => {
            return refuse(Refusal::bad_param(
                "stream",
                "this server only streams responses: set `stream` to true",
            ))
        }
        Err(refusal) => return refuse(refusal),
    }

    let (emitter, body) = channel();
    let fields = json!({"parallel_tool_calls": true, "tool_choice": "auto", "tools": []});
    let stream =
        match ResponseStream::new(emitter, new_id("resp_"), name, unix_time()).fields(&fields) {
            Ok(stream) => stream,
            Err(error) => {
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    OpenAiError::new("server_error", error.to_string()).to_json(),
                )
            }
        };
    tokio::spawn(stream_response_events(stream, job, model, shutdown));
    stream_response(body)
}

fn response_job(body: &serde_json::Map<String, Value>, failing: bool) -> Result<Job, Refusal> {
    let query = match body.get("input") {
        Some(Value::String(text)) => text.clone(),
        input @ Some(Value::Array(_)) => request::last_user_text(input, "input")?,
        Some(_) => {
            return Err(Refusal::bad_param(
                "input",
                "`input` must be a string or an array of messages",
            ))
        }
        None => return Err(Refusal::bad_param("input", "`input` is required")),
    };
    Ok(Job {
        query,
        failing,
        max_pieces: request::limit(body, "max_output_tokens")?,
    })
}

impl Writer for ResponseStream {
    async fn piece(&mut self, text: &str) -> Result<(), StreamError> {
        self.text_delta(text).await
    }

    async fn closed(&self) -> CloseReason {
        ResponseStream::closed(self).await
    }
}

async fn stream_response_events(
    mut stream: ResponseStream,
    job: Job,
    model: Model,
    shutdown: CancellationToken,
) {
    let started = async {
        stream.start().await?;
        stream.begin_message(new_id("msg_")).await
    };
    if let Err(error) = started.await {
        tracing::info!("the response did not start: {error}");
        return;
    }
    let ended = match generate(&mut stream, &job, &model, &shutdown, "responses").await {
        Outcome::Finished { pieces, .. } => {
            let prompt = job.prompt_tokens();
            let usage = json!({"usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": pieces,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + pieces,
            }});
            stream.complete(&usage).await
        }
        Outcome::Failed(message) => stream.fail("server_error", &message).await,
        Outcome::ShuttingDown => {
            stream
                .fail(
                    "server_error",
                    "The server is shutting down: retry the request",
                )
                .await
        }
        Outcome::Gone => Ok(()),
    };
    if let Err(error) = ended {
        tracing::info!("the response's end was not written: {error}");
    }
}
