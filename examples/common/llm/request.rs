//! What the three protocols check alike: the body (JSON, size), the API key, the model name,
//! and the text of the last user message. A refusal is protocol-neutral; each protocol writes
//! it in its own error shape.

use http::{header, HeaderMap, Request, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;
use tower_sse::BoxError;

use super::{ECHO_MODEL, FAILING_MODEL};
use crate::common::MAX_BODY_BYTES;

/// What kind of refusal, which each provider names its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A malformed request (400), a wrong method (405) or path (404).
    InvalidRequest,
    /// No API key (401).
    Authentication,
    /// No such model (404).
    NotFound,
    /// The request body is too large (413).
    TooLarge,
}

/// A refused request: status, kind, message, and the parameter at fault.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub kind: Kind,
    pub message: String,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl Refusal {
    pub fn new(status: StatusCode, kind: Kind, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// A 400 about the parameter `param`.
    pub fn bad_param(param: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            param: Some(param),
            ..Refusal::new(StatusCode::BAD_REQUEST, Kind::InvalidRequest, message)
        }
    }

    fn code(mut self, code: &'static str) -> Refusal {
        self.code = Some(code);
        self
    }
}

/// Any method but POST on a route.
pub fn method_not_allowed() -> Refusal {
    Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Kind::InvalidRequest,
        "only POST is supported on this route",
    )
}

/// The request body as a JSON object (read after the headers were checked).
pub async fn read_json<B>(request: Request<B>) -> Result<serde_json::Map<String, Value>, Refusal>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let body = request.into_body();
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Kind::TooLarge,
            format!("the request body is over {MAX_BODY_BYTES} bytes"),
        )
    };
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return Err(too_large()),
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                Kind::InvalidRequest,
                "could not read the request body",
            ))
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            Kind::InvalidRequest,
            "the request body must be a JSON object",
        )),
        Err(error) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            Kind::InvalidRequest,
            format!("could not parse the JSON body of the request: {error}"),
        )),
    }
}

/// The API key from `Authorization: Bearer ...` or (Anthropic's) `x-api-key`; any non-empty
/// key is accepted.
pub fn require_api_key(headers: &HeaderMap, message: &'static str) -> Result<(), Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .is_some_and(|(scheme, key)| {
            scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty()
        });
    let api_key = headers
        .get("x-api-key")
        .is_some_and(|value| !value.as_bytes().trim_ascii().is_empty());
    if bearer || api_key {
        Ok(())
    } else {
        Err(
            Refusal::new(StatusCode::UNAUTHORIZED, Kind::Authentication, message)
                .code("invalid_api_key"),
        )
    }
}

/// The `model`: a string naming one of the stand-in models. Returns whether it is the one
/// that fails on purpose.
pub fn model(body: &serde_json::Map<String, Value>) -> Result<(String, bool), Refusal> {
    match body.get("model") {
        Some(Value::String(name)) if name == ECHO_MODEL || name == FAILING_MODEL => {
            Ok((name.clone(), name == FAILING_MODEL))
        }
        Some(Value::String(name)) => Err(Refusal {
            param: Some("model"),
            ..Refusal::new(
                StatusCode::NOT_FOUND,
                Kind::NotFound,
                format!(
                    "The model `{name}` does not exist: this server has `{ECHO_MODEL}` and \
                     `{FAILING_MODEL}`"
                ),
            )
        }
        .code("model_not_found")),
        Some(_) => Err(Refusal::bad_param("model", "`model` must be a string")),
        None => Err(Refusal::bad_param("model", "`model` is required")),
    }
}

/// `stream`: absent or a boolean.
pub fn stream_flag(body: &serde_json::Map<String, Value>) -> Result<bool, Refusal> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(_) => Err(Refusal::bad_param("stream", "`stream` must be a boolean")),
    }
}

/// An optional positive integer limit such as `max_tokens`.
pub fn limit(
    body: &serde_json::Map<String, Value>,
    param: &'static str,
) -> Result<Option<usize>, Refusal> {
    match body.get(param) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            _ => Err(Refusal::bad_param(
                param,
                format!("`{param}` must be an integer of at least 1"),
            )),
        },
    }
}

/// The text of the last user message of a `messages` (or `input`) array, whose contents are
/// strings or arrays of text parts (`{"type": "text" | "input_text", "text": ...}`).
pub fn last_user_text(messages: Option<&Value>, param: &'static str) -> Result<String, Refusal> {
    let Some(Value::Array(messages)) = messages else {
        return Err(Refusal::bad_param(
            param,
            format!("`{param}` must be an array of messages"),
        ));
    };
    if messages.is_empty() {
        return Err(Refusal::bad_param(
            param,
            format!("`{param}` must not be empty"),
        ));
    }
    let mut last = None;
    for message in messages {
        let Some(role) = message.get("role").and_then(Value::as_str) else {
            return Err(Refusal::bad_param(
                param,
                "every message needs a string `role`",
            ));
        };
        let text = content_text(message.get("content")).ok_or_else(|| {
            Refusal::bad_param(
                param,
                "a message's `content` must be a string or an array of text parts",
            )
        })?;
        if role == "user" {
            last = Some(text);
        }
    }
    last.ok_or_else(|| Refusal::bad_param(param, format!("`{param}` has no user message")))
}

/// The text of a message content: a string, or the concatenated text of its text parts.
fn content_text(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text" | "input_text") => text.push_str(part.get("text")?.as_str()?),
                    _ => return None,
                }
            }
            Some(text)
        }
        _ => None,
    }
}
