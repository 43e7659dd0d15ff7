//! [`MessageStream`]: `POST /v1/messages` with `"stream": true`, as Anthropic writes it, and
//! [`AnthropicError`].

use bytes::Bytes;
use serde::Serialize;

use super::{json_event, send_all, StreamError};
use crate::{CloseReason, Event, SseEmitter};

/// Writes an Anthropic Messages stream through an [`SseEmitter`]: every event named after its
/// `type`.
///
/// [`start`](Self::start) writes `message_start` (with your `usage`); each content block is
/// [`begin_block`](Self::begin_block) (`content_block_start`, the next `index`), its
/// [`delta`](Self::delta)s (`content_block_delta`) and [`end_block`](Self::end_block)
/// (`content_block_stop`); [`finish`](Self::finish) writes `message_delta` (stop reason and
/// `usage.output_tokens`) then `message_stop` and ends the response. [`ping`](Self::ping) may
/// come anywhere in between; [`fail`](Self::fail) ends the stream with `event: error` in
/// Anthropic's error shape. Calls out of this order are refused with
/// [`StreamError::OutOfOrder`].
///
/// ```
/// use serde_json::json;
/// use tower_sse::{llm::MessageStream, test::collect_events};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::BoxError> {
/// let (emitter, body) = tower_sse::channel(16);
/// let mut message = MessageStream::new(emitter, "msg_1", "my-model");
/// tokio::spawn(async move {
///     message.start(&json!({ "input_tokens": 3, "output_tokens": 0 })).await?;
///     message.begin_text().await?;
///     message.text_delta("Hello").await?;
///     message.end_block().await?;
///     message.finish("end_turn", &json!({ "output_tokens": 1 })).await
/// });
/// let names: Vec<String> = collect_events(body).await?.into_iter().map(|e| e.event).collect();
/// assert_eq!(names.first().map(String::as_str), Some("message_start"));
/// assert_eq!(names.last().map(String::as_str), Some("message_stop"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MessageStream {
    emitter: SseEmitter,
    id: String,
    model: String,
    phase: Phase,
    /// Blocks started so far; the open one, if any, is the last.
    blocks: usize,
    block_open: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    New,
    Started,
    Over,
}

#[derive(Serialize)]
struct Start<'a, U: ?Sized> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: Message<'a, U>,
}

#[derive(Serialize)]
struct Message<'a, U: ?Sized> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    content: [(); 0],
    model: &'a str,
    stop_reason: (),
    stop_sequence: (),
    usage: &'a U,
}

#[derive(Serialize)]
struct Block<'a, B: ?Sized> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_block: Option<&'a B>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a B>,
}

#[derive(Serialize)]
struct Text<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct MessageDelta<'a, U: ?Sized> {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta<'a>,
    usage: &'a U,
}

#[derive(Serialize)]
struct StopDelta<'a> {
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
struct Bare {
    #[serde(rename = "type")]
    kind: &'static str,
}

impl MessageStream {
    /// A stream for the message `id` (`msg_...`) of `model`.
    pub fn new(emitter: SseEmitter, id: impl Into<String>, model: impl Into<String>) -> Self {
        MessageStream {
            emitter,
            id: id.into(),
            model: model.into(),
            phase: Phase::New,
            blocks: 0,
            block_open: false,
        }
    }

    /// Writes `message_start`; `usage` is yours (`{"input_tokens": .., "output_tokens": ..}`,
    /// which the SDKs expect).
    pub async fn start<U: Serialize + ?Sized>(&mut self, usage: &U) -> Result<(), StreamError> {
        if self.phase != Phase::New {
            return Err(StreamError::out_of_order(
                "start",
                "the message has started",
            ));
        }
        let event = json_event(
            Some("message_start"),
            &Start {
                kind: "message_start",
                message: Message {
                    id: &self.id,
                    kind: "message",
                    role: "assistant",
                    content: [],
                    model: &self.model,
                    stop_reason: (),
                    stop_sequence: (),
                    usage,
                },
            },
        )?;
        self.phase = Phase::Started;
        self.emitter.send(event).await?;
        Ok(())
    }

    /// Opens a text block: `content_block_start` with `{"type": "text", "text": ""}`.
    pub async fn begin_text(&mut self) -> Result<(), StreamError> {
        self.begin_block(&Text {
            kind: "text",
            text: "",
        })
        .await
    }

    /// Opens the next content block, whatever its type (`text`, `tool_use`, `thinking`...):
    /// `content_block_start` with your `content_block` and the next index.
    pub async fn begin_block<B: Serialize + ?Sized>(
        &mut self,
        content_block: &B,
    ) -> Result<(), StreamError> {
        self.check_started("begin_block")?;
        if self.block_open {
            return Err(StreamError::out_of_order(
                "begin_block",
                "a content block is open: end it first",
            ));
        }
        let event = self.block_event("content_block_start", Some(content_block), None)?;
        self.blocks += 1;
        self.block_open = true;
        self.emitter.send(event).await?;
        Ok(())
    }

    /// Writes text into the open block: a `content_block_delta` with a `text_delta`.
    pub async fn text_delta(&mut self, text: &str) -> Result<(), StreamError> {
        self.delta(&Text {
            kind: "text_delta",
            text,
        })
        .await
    }

    /// Writes a `content_block_delta` for the open block with your `delta` (`text_delta`,
    /// `input_json_delta`, ...).
    pub async fn delta<D: Serialize + ?Sized>(&mut self, delta: &D) -> Result<(), StreamError> {
        self.check_block("delta")?;
        let index = self.blocks - 1;
        let event = self.block_event_at("content_block_delta", index, None, Some(delta))?;
        self.emitter.send(event).await?;
        Ok(())
    }

    /// Closes the open block: `content_block_stop`.
    pub async fn end_block(&mut self) -> Result<(), StreamError> {
        self.check_block("end_block")?;
        let index = self.blocks - 1;
        let event = self.block_event_at::<()>("content_block_stop", index, None, None)?;
        self.block_open = false;
        self.emitter.send(event).await?;
        Ok(())
    }

    /// Writes `event: ping` (`{"type": "ping"}`), which the SDKs skip.
    pub async fn ping(&mut self) -> Result<(), StreamError> {
        self.check_started("ping")?;
        let event = json_event(Some("ping"), &Bare { kind: "ping" })?;
        self.emitter.send(event).await?;
        Ok(())
    }

    /// Ends the message: `message_delta` with `stop_reason` (`"end_turn"`, `"max_tokens"`,
    /// `"tool_use"`, ...) and your `usage` (with `output_tokens`), then `message_stop`, then
    /// the end of the response. Every block must be closed.
    pub async fn finish<U: Serialize + ?Sized>(
        &mut self,
        stop_reason: &str,
        usage: &U,
    ) -> Result<(), StreamError> {
        self.check_started("finish")?;
        if self.block_open {
            return Err(StreamError::out_of_order(
                "finish",
                "a content block is open: end it first",
            ));
        }
        let delta = json_event(
            Some("message_delta"),
            &MessageDelta {
                kind: "message_delta",
                delta: StopDelta {
                    stop_reason,
                    stop_sequence: None,
                },
                usage,
            },
        )?;
        let stop = json_event(
            Some("message_stop"),
            &Bare {
                kind: "message_stop",
            },
        )?;
        self.end([delta, stop]).await
    }

    /// Ends the stream with `event: error` and `{"type": "error", "error": {...}}`: the SDKs
    /// raise it as an API error. Allowed at any point before the end, even before
    /// [`start`](Self::start).
    pub async fn fail(&mut self, error: &AnthropicError) -> Result<(), StreamError> {
        if self.phase == Phase::Over {
            return Err(StreamError::out_of_order("fail", "the message has ended"));
        }
        let event = json_event(Some("error"), &error.wrapped())?;
        self.end([event]).await
    }

    /// Resolves once the response is over, with why: stop generating when the client left.
    pub async fn closed(&self) -> CloseReason {
        self.emitter.closed().await
    }

    /// The emitter underneath.
    pub fn emitter(&self) -> &SseEmitter {
        &self.emitter
    }

    async fn end<const N: usize>(&mut self, events: [Event; N]) -> Result<(), StreamError> {
        self.phase = Phase::Over;
        let sent = send_all(&self.emitter, events).await;
        self.emitter.complete();
        sent
    }

    fn check_started(&self, call: &'static str) -> Result<(), StreamError> {
        match self.phase {
            Phase::New => Err(StreamError::out_of_order(
                call,
                "the message has not started: call start first",
            )),
            Phase::Started => Ok(()),
            Phase::Over => Err(StreamError::out_of_order(call, "the message has ended")),
        }
    }

    fn check_block(&self, call: &'static str) -> Result<(), StreamError> {
        self.check_started(call)?;
        if !self.block_open {
            return Err(StreamError::out_of_order(
                call,
                "no content block is open: call begin_block first",
            ));
        }
        Ok(())
    }

    fn block_event<B: Serialize + ?Sized>(
        &self,
        kind: &'static str,
        content_block: Option<&B>,
        delta: Option<&B>,
    ) -> Result<Event, StreamError> {
        self.block_event_at(kind, self.blocks, content_block, delta)
    }

    fn block_event_at<B: Serialize + ?Sized>(
        &self,
        kind: &'static str,
        index: usize,
        content_block: Option<&B>,
        delta: Option<&B>,
    ) -> Result<Event, StreamError> {
        json_event(
            Some(kind),
            &Block {
                kind,
                index,
                content_block,
                delta,
            },
        )
    }
}

/// Anthropic's error shape: `{"type": "error", "error": {"type", "message"}}`, the body of its
/// 4xx/5xx answers and the data of `event: error` ([`MessageStream::fail`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnthropicError {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

#[derive(Serialize)]
struct Wrapped<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: &'a AnthropicError,
}

impl AnthropicError {
    /// An error of this type (`"invalid_request_error"`, `"authentication_error"`,
    /// `"not_found_error"`, `"overloaded_error"`, `"api_error"`, ...) with a message for people.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        AnthropicError {
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The type.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The JSON body of an HTTP error answer.
    pub fn to_json(&self) -> Bytes {
        // Strings only: serialising cannot fail.
        serde_json::to_vec(&self.wrapped())
            .map(Bytes::from)
            .unwrap_or_default()
    }

    fn wrapped(&self) -> Wrapped<'_> {
        Wrapped {
            kind: "error",
            error: self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::test_support::{wire, written};

    /// The basic streaming example of Anthropic's Messages streaming guide.
    #[tokio::test]
    async fn writes_the_documented_stream() {
        let (emitter, body) = crate::channel(64);
        let mut message = MessageStream::new(
            emitter,
            "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
            "claude-opus-4-6",
        );
        message
            .start(&serde_json::json!({"input_tokens": 25, "output_tokens": 1}))
            .await
            .unwrap();
        message.begin_text().await.unwrap();
        message.ping().await.unwrap();
        message.text_delta("Hello").await.unwrap();
        message.text_delta("!").await.unwrap();
        message.end_block().await.unwrap();
        message
            .finish("end_turn", &serde_json::json!({"output_tokens": 15}))
            .await
            .unwrap();
        drop(message);
        let expected = wire(&[
            (
                Some("message_start"),
                r#"{"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY","type":"message","role":"assistant","content":[],"model":"claude-opus-4-6","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#,
            ),
            (
                Some("content_block_start"),
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (Some("ping"), r#"{"type":"ping"}"#),
            (
                Some("content_block_delta"),
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            ),
            (
                Some("content_block_delta"),
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}"#,
            ),
            (
                Some("content_block_stop"),
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                Some("message_delta"),
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            ),
            (Some("message_stop"), r#"{"type":"message_stop"}"#),
        ]);
        assert_eq!(written(body).await, expected);
    }

    /// The error event of Anthropic's streaming guide; nothing may follow it.
    #[tokio::test]
    async fn fails_with_the_error_event() {
        let (emitter, body) = crate::channel(64);
        let mut message = MessageStream::new(emitter, "msg_1", "m");
        message
            .start(&serde_json::json!({"input_tokens": 1, "output_tokens": 0}))
            .await
            .unwrap();
        message.begin_text().await.unwrap();
        let error = AnthropicError::new("overloaded_error", "Overloaded");
        message.fail(&error).await.unwrap();
        assert!(matches!(
            message.text_delta("x").await,
            Err(StreamError::OutOfOrder { call: "delta", .. })
        ));
        assert!(matches!(
            message.fail(&error).await,
            Err(StreamError::OutOfOrder { call: "fail", .. })
        ));
        drop(message);
        let text = written(body).await;
        assert!(
            text.ends_with(&wire(&[(
                Some("error"),
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            )])),
            "{text}"
        );
        assert_eq!(
            &error.to_json()[..],
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
        );
    }

    /// Blocks in order, with the next index each; out-of-order calls write nothing.
    #[tokio::test]
    async fn refuses_out_of_order_calls() {
        let (emitter, body) = crate::channel(64);
        let mut message = MessageStream::new(emitter, "msg_1", "m");
        let usage = serde_json::json!({"output_tokens": 2});
        assert!(matches!(
            message.begin_text().await,
            Err(StreamError::OutOfOrder {
                call: "begin_block",
                ..
            })
        ));
        assert!(matches!(
            message.ping().await,
            Err(StreamError::OutOfOrder { call: "ping", .. })
        ));
        message
            .start(&serde_json::json!({"input_tokens": 1, "output_tokens": 0}))
            .await
            .unwrap();
        assert!(matches!(
            message.start(&usage).await,
            Err(StreamError::OutOfOrder { call: "start", .. })
        ));
        assert!(matches!(
            message.text_delta("x").await,
            Err(StreamError::OutOfOrder { call: "delta", .. })
        ));
        assert!(matches!(
            message.end_block().await,
            Err(StreamError::OutOfOrder {
                call: "end_block",
                ..
            })
        ));
        message.begin_text().await.unwrap();
        assert!(matches!(
            message.begin_text().await,
            Err(StreamError::OutOfOrder {
                call: "begin_block",
                ..
            })
        ));
        assert!(matches!(
            message.finish("end_turn", &usage).await,
            Err(StreamError::OutOfOrder { call: "finish", .. })
        ));
        message.end_block().await.unwrap();
        message
            .begin_block(
                &serde_json::json!({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
            )
            .await
            .unwrap();
        message
            .delta(&serde_json::json!({"type": "input_json_delta", "partial_json": "{}"}))
            .await
            .unwrap();
        message.end_block().await.unwrap();
        message.finish("tool_use", &usage).await.unwrap();
        assert!(matches!(
            message.ping().await,
            Err(StreamError::OutOfOrder { call: "ping", .. })
        ));
        drop(message);
        let text = written(body).await;
        let indexes: Vec<&str> = text.matches(r#""index":1"#).collect();
        assert_eq!(indexes.len(), 3, "{text}");
        assert_eq!(text.matches("event: ").count(), 8, "{text}");
    }
}
