//! `POST /v1/messages` with `"stream": true`, as Anthropic answers it.

use http::{Request, Response};
use http_body::Body;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower_sse::{
    llm::{AnthropicError, MessageStream, StreamError},
    BoxError, CloseReason,
};

use super::{channel, generate, new_id, request, stream_response, ApiBody, Job, Outcome, Writer};
use crate::common::Model;
use request::{Kind, Refusal};

/// A refusal as Anthropic writes it: `{"type": "error", "error": {"type", "message"}}`.
pub fn refuse(refusal: Refusal) -> Response<ApiBody> {
    let kind = match refusal.kind {
        Kind::InvalidRequest => "invalid_request_error",
        Kind::Authentication => "authentication_error",
        Kind::NotFound => "not_found_error",
        Kind::TooLarge => "request_too_large",
    };
    // Anthropic names the parameter at fault at the start of the message.
    let message = match refusal.param {
        Some(param) if refusal.kind != Kind::Authentication => {
            format!("{param}: {}", refusal.message)
        }
        _ => refusal.message,
    };
    super::json_response(refusal.status, AnthropicError::new(kind, message).to_json())
}

/// `POST /v1/messages`: the Messages event stream. (This server only streams messages.)
pub async fn messages<B>(
    request: Request<B>,
    model: Model,
    shutdown: CancellationToken,
) -> Response<ApiBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (name, job) = match read(request).await {
        Ok(read) => read,
        Err(refusal) => return refuse(refusal),
    };
    let (emitter, body) = channel();
    let message = MessageStream::new(emitter, new_id("msg_"), name);
    tokio::spawn(stream_message(message, job, model, shutdown));
    stream_response(body)
}

/// The checks Anthropic makes: the key, `anthropic-version`, and the body's `model`,
/// `max_tokens` (required) and `messages`.
async fn read<B>(request: Request<B>) -> Result<(String, Job), Refusal>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    request::require_api_key(request.headers(), "x-api-key header is required")?;
    if !request.headers().contains_key("anthropic-version") {
        return Err(Refusal::bad_param(
            "anthropic-version",
            "header is required",
        ));
    }
    let body = request::read_json(request).await?;
    let (name, failing) = request::model(&body)?;
    let Some(max_pieces) = request::limit(&body, "max_tokens")? else {
        return Err(Refusal::bad_param("max_tokens", "Field required"));
    };
    let query = request::last_user_text(body.get("messages"), "messages")?;
    match request::stream_flag(&body)? {
        true => {}
        false => {
            return Err(Refusal::bad_param(
                "stream",
                "this server only streams messages: set `stream` to true",
            ))
        }
    }
    if body
        .get("system")
        .is_some_and(|system| !system.is_string() && !system.is_array())
    {
        return Err(Refusal::bad_param(
            "system",
            "must be a string or an array of text blocks",
        ));
    }
    Ok((
        name,
        Job {
            query,
            failing,
            max_pieces: Some(max_pieces),
        },
    ))
}

impl Writer for MessageStream {
    async fn piece(&mut self, text: &str) -> Result<(), StreamError> {
        self.text_delta(text).await
    }

    async fn closed(&self) -> CloseReason {
        MessageStream::closed(self).await
    }
}

async fn stream_message(
    mut message: MessageStream,
    job: Job,
    model: Model,
    shutdown: CancellationToken,
) {
    let started = async {
        let usage = json!({"input_tokens": job.prompt_tokens(), "output_tokens": 1});
        message.start(&usage).await?;
        message.begin_text().await?;
        // Anthropic pings once the first block is open; the SDKs skip it.
        message.ping().await
    };
    if let Err(error) = started.await {
        tracing::info!("the message did not start: {error}");
        return;
    }
    let ended = match generate(&mut message, &job, &model, &shutdown, "messages").await {
        Outcome::Finished { pieces, limited } => {
            let stop_reason = if limited { "max_tokens" } else { "end_turn" };
            finish(&mut message, stop_reason, &json!({"output_tokens": pieces})).await
        }
        Outcome::Failed(text) => message.fail(&AnthropicError::new("api_error", text)).await,
        Outcome::ShuttingDown => {
            let error = AnthropicError::new(
                "overloaded_error",
                "The server is shutting down: retry the request",
            );
            message.fail(&error).await
        }
        Outcome::Gone => Ok(()),
    };
    if let Err(error) = ended {
        tracing::info!("the message's end was not written: {error}");
    }
}

async fn finish(
    message: &mut MessageStream,
    stop_reason: &str,
    usage: &Value,
) -> Result<(), StreamError> {
    message.end_block().await?;
    message.finish(stop_reason, usage).await
}
