//! [`ChatCompletionStream`]: `POST /v1/chat/completions` with `"stream": true`, as OpenAI writes
//! it: `chat.completion.chunk` events, the usage chunk, `data: [DONE]`; and [`OpenAiError`].

use bytes::Bytes;
use serde::Serialize;

use super::{json_event, send_all, StreamError};
use crate::{CloseReason, Event, SseEmitter};

/// Writes an OpenAI Chat Completions stream through an [`SseEmitter`].
///
/// Every chunk carries the same `id`, `created` and `model`; each choice's first delta adds
/// `role: "assistant"`; [`finish`](Self::finish) writes a choice's `finish_reason`; with
/// [`include_usage`](Self::include_usage) every chunk has `"usage": null` and
/// [`usage`](Self::usage) writes the usage chunk (`choices: []`); [`done`](Self::done) writes
/// `data: [DONE]` once and ends the response. [`fail`](Self::fail) writes OpenAI's error
/// object instead, which the SDKs raise as an `APIError`.
///
/// `done` is refused until every choice that was started has finished (and the usage chunk
/// was written, when asked for), so the SDKs never see a stream end without a
/// `finish_reason`.
#[derive(Debug)]
pub struct ChatCompletionStream {
    emitter: SseEmitter,
    id: String,
    created: u64,
    model: String,
    system_fingerprint: Option<String>,
    include_usage: bool,
    /// Choices with a first delta written, and whether each has finished.
    choices: Vec<(u32, bool)>,
    usage_written: bool,
    over: bool,
}

/// One `chat.completion.chunk`.
#[derive(Serialize)]
struct Chunk<'a, C, U> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    choices: C,
    /// Absent unless usage was asked for; then `null` on every chunk but the usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a U>>,
}

#[derive(Serialize)]
struct Choice<'a, D: ?Sized> {
    index: u32,
    delta: Delta<'a, D>,
    logprobs: (),
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Delta<'a, D: ?Sized> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(flatten)]
    fields: &'a D,
}

#[derive(Serialize)]
struct Content<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct NoFields {}

/// Whether delta fields set `role` themselves; refuses fields that are not a JSON object.
fn has_role<D: Serialize + ?Sized>(fields: &D) -> Result<bool, StreamError> {
    match serde_json::to_value(fields).map_err(crate::EventError::from)? {
        serde_json::Value::Object(map) => Ok(map.contains_key("role")),
        _ => Err(
            crate::EventError::from(<serde_json::Error as serde::ser::Error>::custom(
                "a delta must serialise as a JSON object",
            ))
            .into(),
        ),
    }
}

impl ChatCompletionStream {
    /// A stream whose chunks all carry this `id` (`chatcmpl-...`), `model`, and `created`
    /// (Unix seconds).
    pub fn new(
        emitter: SseEmitter,
        id: impl Into<String>,
        model: impl Into<String>,
        created: u64,
    ) -> Self {
        ChatCompletionStream {
            emitter,
            id: id.into(),
            created,
            model: model.into(),
            system_fingerprint: None,
            include_usage: false,
            choices: Vec::new(),
            usage_written: false,
            over: false,
        }
    }

    /// Adds `system_fingerprint` to every chunk.
    pub fn system_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.system_fingerprint = Some(fingerprint.into());
        self
    }

    /// The request asked for `stream_options.include_usage`: every chunk gets `"usage": null`
    /// and the stream must end with a [`usage`](Self::usage) chunk.
    pub fn include_usage(mut self, include: bool) -> Self {
        self.include_usage = include;
        self
    }

    /// Writes text for choice 0: a chunk whose delta is `{"content": text}`.
    pub async fn content(&mut self, text: &str) -> Result<(), StreamError> {
        self.delta(0, &Content { content: text }).await
    }

    /// Writes a chunk for choice `index` whose delta holds your fields (any value that
    /// serialises as a JSON object: `content`, `tool_calls`, `refusal`, ...). The first delta of
    /// a choice also gets `role: "assistant"`, unless your fields set a role. Fields that are
    /// not a JSON object are refused with [`StreamError::Encode`].
    pub async fn delta<D: Serialize + ?Sized>(
        &mut self,
        index: u32,
        delta: &D,
    ) -> Result<(), StreamError> {
        self.check_open("delta")?;
        let started = match self.choice(index) {
            Some(true) => {
                return Err(StreamError::out_of_order(
                    "delta",
                    "this choice already has its finish_reason",
                ))
            }
            Some(false) => true,
            None => false,
        };
        // A first delta gets the role, unless it brings its own.
        let add_role = !started && !has_role(delta)?;
        let event = self.chunk_event(index, delta, add_role, None)?;
        self.choices_mark(index, false);
        self.emitter.send(event).await?;
        Ok(())
    }

    /// Writes choice `index`'s last chunk: an empty delta with `finish_reason` (`"stop"`,
    /// `"length"`, `"tool_calls"`, `"content_filter"`, ...).
    pub async fn finish(&mut self, index: u32, finish_reason: &str) -> Result<(), StreamError> {
        self.check_open("finish")?;
        let started = match self.choice(index) {
            Some(true) => {
                return Err(StreamError::out_of_order(
                    "finish",
                    "this choice already has its finish_reason",
                ))
            }
            Some(false) => true,
            None => false,
        };
        let event = self.chunk_event(index, &NoFields {}, !started, Some(finish_reason))?;
        self.choices_mark(index, true);
        self.emitter.send(event).await?;
        Ok(())
    }

    /// Writes the usage chunk (`choices: []`, `usage` yours: `prompt_tokens`,
    /// `completion_tokens`, `total_tokens`, ...), after every choice finished. Only when the
    /// request asked for it ([`include_usage`](Self::include_usage)).
    pub async fn usage<U: Serialize>(&mut self, usage: &U) -> Result<(), StreamError> {
        self.check_open("usage")?;
        if !self.include_usage {
            return Err(StreamError::out_of_order(
                "usage",
                "the request did not ask for usage (stream_options.include_usage)",
            ));
        }
        self.check_all_finished("usage")?;
        let event = json_event(None, &self.head([(); 0], Some(Some(usage))))?;
        self.usage_written = true;
        self.emitter.send(event).await?;
        Ok(())
    }

    /// Writes `data: [DONE]` and ends the response: after every choice finished, and after the
    /// usage chunk when usage was asked for.
    pub async fn done(&mut self) -> Result<(), StreamError> {
        if self.over {
            return Err(StreamError::out_of_order("done", "the stream has ended"));
        }
        self.check_all_finished("done")?;
        if self.include_usage && !self.usage_written {
            return Err(StreamError::out_of_order(
                "done",
                "the request asked for usage: write the usage chunk first",
            ));
        }
        self.over = true;
        let sent = send_all(&self.emitter, [Event::new().data("[DONE]")]).await;
        self.emitter.complete();
        sent
    }

    /// Ends the stream with OpenAI's error object (`{"error": {...}}`) instead of `[DONE]`:
    /// the SDKs raise it as an `APIError`. Allowed at any point before the end.
    pub async fn fail(&mut self, error: &OpenAiError) -> Result<(), StreamError> {
        self.check_open("fail")?;
        let event = json_event(None, &error.wrapped())?;
        self.over = true;
        let sent = self.emitter.send(event).await;
        self.emitter.complete();
        Ok(sent?)
    }

    /// Resolves once the response is over, with why: stop generating when the client left.
    pub async fn closed(&self) -> CloseReason {
        self.emitter.closed().await
    }

    /// The emitter underneath.
    pub fn emitter(&self) -> &SseEmitter {
        &self.emitter
    }

    fn check_open(&self, call: &'static str) -> Result<(), StreamError> {
        if self.over {
            return Err(StreamError::out_of_order(call, "the stream has ended"));
        }
        if self.usage_written {
            return Err(StreamError::out_of_order(
                call,
                "the usage chunk was written: only `done` may follow",
            ));
        }
        Ok(())
    }

    fn check_all_finished(&self, call: &'static str) -> Result<(), StreamError> {
        if self.choices.is_empty() {
            return Err(StreamError::out_of_order(
                call,
                "no choice has been written: finish at least one",
            ));
        }
        if self.choices.iter().any(|&(_, finished)| !finished) {
            return Err(StreamError::out_of_order(
                call,
                "a choice has no finish_reason yet",
            ));
        }
        Ok(())
    }

    /// Whether choice `index` has started, and if so whether it finished.
    fn choice(&self, index: u32) -> Option<bool> {
        self.choices
            .iter()
            .find(|(i, _)| *i == index)
            .map(|&(_, finished)| finished)
    }

    fn choices_mark(&mut self, index: u32, finished: bool) {
        match self.choices.iter_mut().find(|(i, _)| *i == index) {
            Some(choice) => choice.1 = finished,
            None => self.choices.push((index, finished)),
        }
    }

    fn head<'a, C, U>(&'a self, choices: C, usage: Option<Option<&'a U>>) -> Chunk<'a, C, U> {
        Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: self.system_fingerprint.as_deref(),
            choices,
            usage,
        }
    }

    fn chunk_event<D: Serialize + ?Sized>(
        &self,
        index: u32,
        fields: &D,
        first: bool,
        finish_reason: Option<&str>,
    ) -> Result<Event, StreamError> {
        let choice = Choice {
            index,
            delta: Delta {
                role: first.then_some("assistant"),
                fields,
            },
            logprobs: (),
            finish_reason,
        };
        let usage: Option<Option<&()>> = self.include_usage.then_some(None);
        json_event(None, &self.head([choice], usage))
    }
}

/// OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`, the body of its
/// 4xx/5xx answers and of an error written mid-stream ([`ChatCompletionStream::fail`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenAiError {
    message: String,
    #[serde(rename = "type")]
    kind: String,
    param: Option<String>,
    code: Option<String>,
}

#[derive(Serialize)]
struct Wrapped<'a> {
    error: &'a OpenAiError,
}

impl OpenAiError {
    /// An error of this `type` (`"invalid_request_error"`, `"server_error"`, ...) with a
    /// message for people; `param` and `code` are `null` until set.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        OpenAiError {
            message: message.into(),
            kind: kind.into(),
            param: None,
            code: None,
        }
    }

    /// The request parameter at fault, such as `"model"` or `"messages"`.
    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// A machine-readable code, such as `"model_not_found"` or `"invalid_api_key"`.
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `type`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The JSON body of an HTTP error answer: `{"error": {...}}`.
    pub fn to_json(&self) -> Bytes {
        // Strings and nulls only: serialising cannot fail.
        serde_json::to_vec(&self.wrapped())
            .map(Bytes::from)
            .unwrap_or_default()
    }

    fn wrapped(&self) -> Wrapped<'_> {
        Wrapped { error: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::test_support::{wire, written};

    const HEAD: &str = r#""id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb""#;

    fn stream() -> (ChatCompletionStream, crate::SseBody<crate::EventReceiver>) {
        let (emitter, body) = crate::channel(64);
        let chunks = ChatCompletionStream::new(emitter, "chatcmpl-123", "gpt-4o-mini", 1694268190)
            .system_fingerprint("fp_44709d6fcb");
        (chunks, body)
    }

    /// The streaming example of OpenAI's chat completion chunk reference: a role chunk with
    /// empty content, content chunks, a finish chunk, `[DONE]`.
    #[tokio::test]
    async fn writes_the_documented_stream() {
        let (mut chunks, body) = stream();
        chunks.content("").await.unwrap();
        chunks.content("Hello").await.unwrap();
        chunks.content(" world").await.unwrap();
        chunks.finish(0, "stop").await.unwrap();
        chunks.done().await.unwrap();
        drop(chunks);
        let c = |choice: &str| format!("{{{HEAD},\"choices\":[{choice}]}}");
        let expected = wire(&[
            (
                None,
                &c(
                    r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#,
                ),
            ),
            (
                None,
                &c(
                    r#"{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}"#,
                ),
            ),
            (
                None,
                &c(
                    r#"{"index":0,"delta":{"content":" world"},"logprobs":null,"finish_reason":null}"#,
                ),
            ),
            (
                None,
                &c(r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#),
            ),
            (None, "[DONE]"),
        ]);
        assert_eq!(written(body).await, expected);
    }

    /// With `stream_options.include_usage`: `"usage":null` on every chunk, then the usage
    /// chunk with an empty `choices`, as in OpenAI's streaming guide.
    #[tokio::test]
    async fn writes_the_usage_chunk_when_asked() {
        let (chunks, body) = stream();
        let mut chunks = chunks.include_usage(true);
        chunks.content("Hi").await.unwrap();
        assert!(matches!(
            chunks.done().await,
            Err(StreamError::OutOfOrder { call: "done", .. })
        ));
        chunks.finish(0, "stop").await.unwrap();
        assert!(matches!(
            chunks.done().await,
            Err(StreamError::OutOfOrder { call: "done", .. })
        ));
        let usage =
            serde_json::json!({"completion_tokens": 1, "prompt_tokens": 9, "total_tokens": 10});
        chunks.usage(&usage).await.unwrap();
        assert!(matches!(
            chunks.content("late").await,
            Err(StreamError::OutOfOrder { call: "delta", .. })
        ));
        chunks.done().await.unwrap();
        drop(chunks);
        let expected = wire(&[
            (
                None,
                &format!(
                    r#"{{{HEAD},"choices":[{{"index":0,"delta":{{"role":"assistant","content":"Hi"}},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
                ),
            ),
            (
                None,
                &format!(
                    r#"{{{HEAD},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}],"usage":null}}"#
                ),
            ),
            (
                None,
                &format!(
                    r#"{{{HEAD},"choices":[],"usage":{{"completion_tokens":1,"prompt_tokens":9,"total_tokens":10}}}}"#
                ),
            ),
            (None, "[DONE]"),
        ]);
        assert_eq!(written(body).await, expected);
    }

    /// An error mid-stream is OpenAI's error object, and no `[DONE]` follows it.
    #[tokio::test]
    async fn fails_with_the_error_object() {
        let (mut chunks, body) = stream();
        chunks.content("Hel").await.unwrap();
        let error = OpenAiError::new("server_error", "The model failed").code("model_error");
        chunks.fail(&error).await.unwrap();
        assert!(matches!(
            chunks.done().await,
            Err(StreamError::OutOfOrder { call: "done", .. })
        ));
        assert!(matches!(
            chunks.fail(&error).await,
            Err(StreamError::OutOfOrder { call: "fail", .. })
        ));
        drop(chunks);
        let text = written(body).await;
        let last = text.rsplit_terminator("\n\n").next().unwrap();
        assert_eq!(
            last,
            r#"data: {"error":{"message":"The model failed","type":"server_error","param":null,"code":"model_error"}}"#
        );
        assert!(!text.contains("[DONE]"));
        assert_eq!(
            &error.to_json()[..],
            br#"{"error":{"message":"The model failed","type":"server_error","param":null,"code":"model_error"}}"#
        );
    }

    /// Your own delta fields, several choices, a role you set yourself; refusals leave the
    /// stream as it was.
    #[tokio::test]
    async fn takes_your_fields_and_refuses_out_of_order_calls() {
        #[derive(Serialize)]
        struct ToolCall {
            tool_calls: Vec<serde_json::Value>,
        }
        let (emitter, body) = crate::channel(64);
        let mut chunks = ChatCompletionStream::new(emitter, "c", "m", 1);
        assert!(matches!(
            chunks.done().await,
            Err(StreamError::OutOfOrder { call: "done", .. })
        ));
        assert!(matches!(
            chunks.usage(&serde_json::json!({})).await,
            Err(StreamError::OutOfOrder { call: "usage", .. })
        ));
        assert!(matches!(
            chunks.delta(0, &"not an object").await,
            Err(StreamError::Encode(_))
        ));
        let call = ToolCall {
            tool_calls: vec![serde_json::json!({"index": 0, "id": "call_1"})],
        };
        chunks.delta(1, &call).await.unwrap();
        chunks
            .delta(0, &serde_json::json!({"role": "assistant", "content": "a"}))
            .await
            .unwrap();
        chunks.finish(1, "tool_calls").await.unwrap();
        assert!(matches!(
            chunks.delta(1, &call).await,
            Err(StreamError::OutOfOrder { call: "delta", .. })
        ));
        assert!(matches!(
            chunks.done().await,
            Err(StreamError::OutOfOrder { call: "done", .. })
        ));
        chunks.finish(0, "stop").await.unwrap();
        chunks.done().await.unwrap();
        drop(chunks);
        let head = r#""id":"c","object":"chat.completion.chunk","created":1,"model":"m""#;
        let expected = wire(&[
            (
                None,
                &format!(
                    r#"{{{head},"choices":[{{"index":1,"delta":{{"role":"assistant","tool_calls":[{{"id":"call_1","index":0}}]}},"logprobs":null,"finish_reason":null}}]}}"#
                ),
            ),
            (
                None,
                &format!(
                    r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"a","role":"assistant"}},"logprobs":null,"finish_reason":null}}]}}"#
                ),
            ),
            (
                None,
                &format!(
                    r#"{{{head},"choices":[{{"index":1,"delta":{{}},"logprobs":null,"finish_reason":"tool_calls"}}]}}"#
                ),
            ),
            (
                None,
                &format!(
                    r#"{{{head},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}]}}"#
                ),
            ),
            (None, "[DONE]"),
        ]);
        assert_eq!(written(body).await, expected);
    }

    /// A client gone is [`StreamError::Closed`].
    #[tokio::test]
    async fn reports_a_client_gone() {
        let (mut chunks, body) = stream();
        drop(body);
        assert!(matches!(
            chunks.content("x").await,
            Err(StreamError::Closed(_))
        ));
        assert_eq!(chunks.closed().await, CloseReason::Disconnected);
    }
}
