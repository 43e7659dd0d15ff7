//! [`ResponseStream`]: `POST /v1/responses` with `"stream": true`, as OpenAI writes it: named
//! `response.*` events, each with its `sequence_number`, and exactly one terminal event.

use serde::Serialize;
use serde_json::{value::RawValue, Map, Value};

use super::{json_event, send_all, StreamError};
use crate::{CloseReason, Event, EventError, SseEmitter};

/// The fields of the response object that the writer owns; yours may not set them.
const OWN_FIELDS: [&str; 8] = [
    "id",
    "object",
    "created_at",
    "status",
    "error",
    "incomplete_details",
    "model",
    "output",
];

/// Writes an OpenAI Responses stream through an [`SseEmitter`].
///
/// [`start`](Self::start) writes `response.created` and `response.in_progress`;
/// [`begin_message`](Self::begin_message) opens an assistant message
/// (`response.output_item.added`, `response.content_part.added`), whose text
/// [`text_delta`](Self::text_delta) streams (`response.output_text.delta`) and
/// [`end_message`](Self::end_message) closes (`response.output_text.done`,
/// `response.content_part.done`, `response.output_item.done`); then exactly one terminal event:
/// [`complete`](Self::complete) (`response.completed`, with the full `output`) or
/// [`fail`](Self::fail) (`response.failed`). Every event gets the next `sequence_number` and
/// carries the same response id. Calls out of this order are refused with
/// [`StreamError::OutOfOrder`].
///
/// ```
/// use serde_json::json;
/// use tower_sse::{llm::ResponseStream, test::collect_events};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_sse::BoxError> {
/// let (emitter, body) = tower_sse::channel(16);
/// let mut response = ResponseStream::new(emitter, "resp_1", "my-model", 1_700_000_000);
/// tokio::spawn(async move {
///     response.start().await?;
///     response.begin_message("msg_1").await?;
///     response.text_delta("Hello").await?;
///     response.complete(&json!({})).await
/// });
/// let names: Vec<String> = collect_events(body).await?.into_iter().map(|e| e.event).collect();
/// assert_eq!(names.first().map(String::as_str), Some("response.created"));
/// assert_eq!(names.last().map(String::as_str), Some("response.completed"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ResponseStream {
    emitter: SseEmitter,
    id: String,
    model: String,
    created_at: u64,
    /// Your fields of the response object, written in every snapshot of it.
    fields: Map<String, Value>,
    sequence_number: u64,
    phase: Phase,
    /// The output items written so far, done.
    output: Vec<Box<RawValue>>,
    message: Option<OpenMessage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    InProgress,
    Over,
}

/// The assistant message being streamed.
#[derive(Debug)]
struct OpenMessage {
    item_id: String,
    output_index: usize,
    text: String,
}

/// The response object, as each lifecycle event carries it.
#[derive(Serialize)]
struct Snapshot<'a, E> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    error: Option<&'a E>,
    incomplete_details: (),
    model: &'a str,
    output: &'a [Box<RawValue>],
    #[serde(flatten)]
    fields: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct Lifecycle<'a, E> {
    #[serde(rename = "type")]
    kind: &'static str,
    response: Snapshot<'a, E>,
    sequence_number: u64,
}

#[derive(Serialize)]
struct FailureDetail<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct Item<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    content: &'a [Part<'a>],
    role: &'static str,
}

#[derive(Serialize)]
struct Part<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct ItemEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    output_index: usize,
    item: Item<'a>,
    sequence_number: u64,
}

#[derive(Serialize)]
struct PartEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    part: Part<'a>,
    sequence_number: u64,
}

#[derive(Serialize)]
struct TextEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    sequence_number: u64,
}

impl ResponseStream {
    /// A stream for the response `id` (`resp_...`) of `model`, created at `created_at` (Unix
    /// seconds).
    pub fn new(
        emitter: SseEmitter,
        id: impl Into<String>,
        model: impl Into<String>,
        created_at: u64,
    ) -> Self {
        ResponseStream {
            emitter,
            id: id.into(),
            model: model.into(),
            created_at,
            fields: Map::new(),
            sequence_number: 0,
            phase: Phase::Created,
            output: Vec::new(),
            message: None,
        }
    }

    /// Adds your fields to every snapshot of the response object (`instructions`,
    /// `temperature`, `metadata`, ...): any value that serialises as a JSON object without the
    /// fields the writer owns (`id`, `object`, `created_at`, `status`, `error`,
    /// `incomplete_details`, `model`, `output`).
    pub fn fields<F: Serialize + ?Sized>(mut self, fields: &F) -> Result<Self, StreamError> {
        let fields = own_object(fields)?;
        self.fields.extend(fields);
        Ok(self)
    }

    /// Writes `response.created` then `response.in_progress`.
    pub async fn start(&mut self) -> Result<(), StreamError> {
        if self.phase != Phase::Created {
            return Err(StreamError::out_of_order(
                "start",
                "the response has started",
            ));
        }
        let created = self.lifecycle("response.created", "in_progress", None::<&()>, None)?;
        let in_progress =
            self.lifecycle("response.in_progress", "in_progress", None::<&()>, None)?;
        self.phase = Phase::InProgress;
        send_all(&self.emitter, [created, in_progress]).await
    }

    /// Opens an assistant message with this item id (`msg_...`), as the next output item:
    /// writes `response.output_item.added` and `response.content_part.added`.
    pub async fn begin_message(&mut self, item_id: impl Into<String>) -> Result<(), StreamError> {
        self.check_in_progress("begin_message")?;
        if self.message.is_some() {
            return Err(StreamError::out_of_order(
                "begin_message",
                "a message is open: end it first",
            ));
        }
        let message = OpenMessage {
            item_id: item_id.into(),
            output_index: self.output.len(),
            text: String::new(),
        };
        let added = json_event(
            Some("response.output_item.added"),
            &ItemEvent {
                kind: "response.output_item.added",
                output_index: message.output_index,
                item: message_item(&message.item_id, "in_progress", &[]),
                sequence_number: self.sequence_number,
            },
        )?;
        let part = json_event(
            Some("response.content_part.added"),
            &PartEvent {
                kind: "response.content_part.added",
                item_id: &message.item_id,
                output_index: message.output_index,
                content_index: 0,
                part: output_text(""),
                sequence_number: self.sequence_number + 1,
            },
        )?;
        self.sequence_number += 2;
        self.message = Some(message);
        send_all(&self.emitter, [added, part]).await
    }

    /// Writes a piece of the open message's text (`response.output_text.delta`).
    pub async fn text_delta(&mut self, delta: &str) -> Result<(), StreamError> {
        self.check_in_progress("text_delta")?;
        let Some(message) = &mut self.message else {
            return Err(StreamError::out_of_order(
                "text_delta",
                "no message is open: call begin_message first",
            ));
        };
        let event = json_event(
            Some("response.output_text.delta"),
            &TextEvent {
                kind: "response.output_text.delta",
                item_id: &message.item_id,
                output_index: message.output_index,
                content_index: 0,
                delta: Some(delta),
                text: None,
                sequence_number: self.sequence_number,
            },
        )?;
        self.sequence_number += 1;
        message.text.push_str(delta);
        self.emitter.send(event).await?;
        Ok(())
    }

    /// Closes the open message with its full text: `response.output_text.done`,
    /// `response.content_part.done` and `response.output_item.done`.
    pub async fn end_message(&mut self) -> Result<(), StreamError> {
        self.check_in_progress("end_message")?;
        let events = self.close_message("end_message")?;
        send_all(&self.emitter, events).await
    }

    /// Writes `response.completed` with the full `output` and ends the response; an open
    /// message is closed first. `fields` are added to the final response object (typically
    /// `usage`); pass `&serde_json::json!({})` for none.
    pub async fn complete<F: Serialize + ?Sized>(&mut self, fields: &F) -> Result<(), StreamError> {
        self.check_in_progress("complete")?;
        let mut final_fields = self.fields.clone();
        final_fields.extend(own_object(fields)?);
        let mut events = if self.message.is_some() {
            self.close_message("complete")?
        } else {
            Vec::new()
        };
        events.push(self.lifecycle(
            "response.completed",
            "completed",
            None::<&()>,
            Some(&final_fields),
        )?);
        self.finish(events).await
    }

    /// Writes `response.failed` (status `failed`, `error: {"code", "message"}`, the output
    /// items finished so far) and ends the response. Allowed once the response has started.
    pub async fn fail(&mut self, code: &str, message: &str) -> Result<(), StreamError> {
        self.check_in_progress("fail")?;
        let error = FailureDetail { code, message };
        let failed = self.lifecycle("response.failed", "failed", Some(&error), None)?;
        self.message = None;
        self.finish(vec![failed]).await
    }

    /// Resolves once the response is over, with why: stop generating when the client left.
    pub async fn closed(&self) -> CloseReason {
        self.emitter.closed().await
    }

    /// The emitter underneath.
    pub fn emitter(&self) -> &SseEmitter {
        &self.emitter
    }

    async fn finish(&mut self, events: Vec<Event>) -> Result<(), StreamError> {
        self.phase = Phase::Over;
        let sent = send_all(&self.emitter, events).await;
        self.emitter.complete();
        sent
    }

    fn check_in_progress(&self, call: &'static str) -> Result<(), StreamError> {
        match self.phase {
            Phase::Created => Err(StreamError::out_of_order(
                call,
                "the response has not started: call start first",
            )),
            Phase::InProgress => Ok(()),
            Phase::Over => Err(StreamError::out_of_order(call, "the response has ended")),
        }
    }

    /// The three events that close the open message; it joins the output once they are built.
    fn close_message(&mut self, call: &'static str) -> Result<Vec<Event>, StreamError> {
        let Some(message) = &self.message else {
            return Err(StreamError::out_of_order(call, "no message is open"));
        };
        let seq = self.sequence_number;
        let (id, index, text) = (&message.item_id, message.output_index, &message.text);
        let text_done = json_event(
            Some("response.output_text.done"),
            &TextEvent {
                kind: "response.output_text.done",
                item_id: id,
                output_index: index,
                content_index: 0,
                delta: None,
                text: Some(text),
                sequence_number: seq,
            },
        )?;
        let part_done = json_event(
            Some("response.content_part.done"),
            &PartEvent {
                kind: "response.content_part.done",
                item_id: id,
                output_index: index,
                content_index: 0,
                part: output_text(text),
                sequence_number: seq + 1,
            },
        )?;
        let parts = [output_text(text)];
        let item = message_item(id, "completed", &parts);
        let item_value = serde_json::value::to_raw_value(&item).map_err(EventError::from)?;
        let item_done = json_event(
            Some("response.output_item.done"),
            &ItemEvent {
                kind: "response.output_item.done",
                output_index: index,
                item,
                sequence_number: seq + 2,
            },
        )?;
        self.sequence_number += 3;
        self.output.push(item_value);
        self.message = None;
        Ok(vec![text_done, part_done, item_done])
    }

    /// A lifecycle event carrying a snapshot of the response; takes the next sequence number.
    fn lifecycle<E: Serialize>(
        &mut self,
        kind: &'static str,
        status: &'static str,
        error: Option<&E>,
        fields: Option<&Map<String, Value>>,
    ) -> Result<Event, StreamError> {
        let event = json_event(
            Some(kind),
            &Lifecycle {
                kind,
                response: Snapshot {
                    id: &self.id,
                    object: "response",
                    created_at: self.created_at,
                    status,
                    error,
                    incomplete_details: (),
                    model: &self.model,
                    output: &self.output,
                    fields: fields.unwrap_or(&self.fields),
                },
                sequence_number: self.sequence_number,
            },
        )?;
        self.sequence_number += 1;
        Ok(event)
    }
}

fn message_item<'a>(id: &'a str, status: &'static str, content: &'a [Part<'a>]) -> Item<'a> {
    Item {
        id,
        kind: "message",
        status,
        content,
        role: "assistant",
    }
}

fn output_text(text: &str) -> Part<'_> {
    Part {
        kind: "output_text",
        text,
        annotations: [],
    }
}

/// Your fields as a JSON object, refused if they are not one or set a field the writer owns.
fn own_object<F: Serialize + ?Sized>(fields: &F) -> Result<Map<String, Value>, StreamError> {
    let refuse = |message: &str| -> StreamError {
        EventError::from(<serde_json::Error as serde::ser::Error>::custom(message)).into()
    };
    match serde_json::to_value(fields).map_err(EventError::from)? {
        Value::Object(map) => {
            if OWN_FIELDS.iter().any(|field| map.contains_key(*field)) {
                return Err(refuse(
                    "the response fields may not set id, object, created_at, status, error, \
                     incomplete_details, model or output",
                ));
            }
            Ok(map)
        }
        _ => Err(refuse(
            "the response fields must serialise as a JSON object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::test_support::{wire, written};

    /// The text-streaming example of OpenAI's Responses guide: created, in progress, the
    /// message item and its part, deltas, the three done events, completed with the output.
    #[tokio::test]
    async fn writes_the_documented_stream() {
        let (emitter, body) = crate::channel(64);
        let mut stream = ResponseStream::new(
            emitter,
            "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654",
            "gpt-4.1-2025-04-14",
            1741290958,
        )
        .fields(&serde_json::json!({"instructions": null}))
        .unwrap();
        stream.start().await.unwrap();
        stream
            .begin_message("msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654")
            .await
            .unwrap();
        stream.text_delta("Hi").await.unwrap();
        stream.text_delta(" there!").await.unwrap();
        stream.end_message().await.unwrap();
        let usage = serde_json::json!({"usage": {"input_tokens": 37, "output_tokens": 11, "total_tokens": 48}});
        stream.complete(&usage).await.unwrap();
        drop(stream);

        let resp = |status: &str, output: &str, extra: &str| {
            format!(
                r#"{{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"{status}","error":null,"incomplete_details":null,"model":"gpt-4.1-2025-04-14","output":[{output}],"instructions":null{extra}}}"#
            )
        };
        let msg = "msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654";
        let item = format!(
            r#"{{"id":"{msg}","type":"message","status":"completed","content":[{{"type":"output_text","text":"Hi there!","annotations":[]}}],"role":"assistant"}}"#
        );
        let expected = wire(&[
            (
                Some("response.created"),
                &format!(
                    r#"{{"type":"response.created","response":{},"sequence_number":0}}"#,
                    resp("in_progress", "", "")
                ),
            ),
            (
                Some("response.in_progress"),
                &format!(
                    r#"{{"type":"response.in_progress","response":{},"sequence_number":1}}"#,
                    resp("in_progress", "", "")
                ),
            ),
            (
                Some("response.output_item.added"),
                &format!(
                    r#"{{"type":"response.output_item.added","output_index":0,"item":{{"id":"{msg}","type":"message","status":"in_progress","content":[],"role":"assistant"}},"sequence_number":2}}"#
                ),
            ),
            (
                Some("response.content_part.added"),
                &format!(
                    r#"{{"type":"response.content_part.added","item_id":"{msg}","output_index":0,"content_index":0,"part":{{"type":"output_text","text":"","annotations":[]}},"sequence_number":3}}"#
                ),
            ),
            (
                Some("response.output_text.delta"),
                &format!(
                    r#"{{"type":"response.output_text.delta","item_id":"{msg}","output_index":0,"content_index":0,"delta":"Hi","sequence_number":4}}"#
                ),
            ),
            (
                Some("response.output_text.delta"),
                &format!(
                    r#"{{"type":"response.output_text.delta","item_id":"{msg}","output_index":0,"content_index":0,"delta":" there!","sequence_number":5}}"#
                ),
            ),
            (
                Some("response.output_text.done"),
                &format!(
                    r#"{{"type":"response.output_text.done","item_id":"{msg}","output_index":0,"content_index":0,"text":"Hi there!","sequence_number":6}}"#
                ),
            ),
            (
                Some("response.content_part.done"),
                &format!(
                    r#"{{"type":"response.content_part.done","item_id":"{msg}","output_index":0,"content_index":0,"part":{{"type":"output_text","text":"Hi there!","annotations":[]}},"sequence_number":7}}"#
                ),
            ),
            (
                Some("response.output_item.done"),
                &format!(
                    r#"{{"type":"response.output_item.done","output_index":0,"item":{item},"sequence_number":8}}"#
                ),
            ),
            (
                Some("response.completed"),
                &format!(
                    r#"{{"type":"response.completed","response":{},"sequence_number":9}}"#,
                    resp(
                        "completed",
                        &item,
                        r#","usage":{"input_tokens":37,"output_tokens":11,"total_tokens":48}"#
                    )
                ),
            ),
        ]);
        assert_eq!(written(body).await, expected);
    }

    /// A failure is one `response.failed` with the error, and nothing may follow it.
    #[tokio::test]
    async fn fails_once() {
        let (emitter, body) = crate::channel(64);
        let mut stream = ResponseStream::new(emitter, "resp_1", "m", 7);
        stream.start().await.unwrap();
        stream.begin_message("msg_1").await.unwrap();
        stream.text_delta("par").await.unwrap();
        stream
            .fail("server_error", "The model failed")
            .await
            .unwrap();
        for refused in [
            stream.text_delta("x").await,
            stream.complete(&serde_json::json!({})).await,
            stream.fail("server_error", "again").await,
        ] {
            assert!(
                matches!(refused, Err(StreamError::OutOfOrder { .. })),
                "{refused:?}"
            );
        }
        drop(stream);
        let text = written(body).await;
        let last = text.rsplit_terminator("\n\n").next().unwrap();
        assert_eq!(
            last,
            r#"event: response.failed
data: {"type":"response.failed","response":{"id":"resp_1","object":"response","created_at":7,"status":"failed","error":{"code":"server_error","message":"The model failed"},"incomplete_details":null,"model":"m","output":[]},"sequence_number":5}"#
        );
        assert_eq!(text.matches("event: response.failed").count(), 1);
        assert!(!text.contains("response.completed"));
    }

    /// Out-of-order calls and bad fields are refused and write nothing.
    #[tokio::test]
    async fn refuses_out_of_order_calls_and_bad_fields() {
        let (emitter, body) = crate::channel(64);
        assert!(matches!(
            ResponseStream::new(emitter.clone(), "r", "m", 0)
                .fields(&serde_json::json!({"id": "x"})),
            Err(StreamError::Encode(_))
        ));
        assert!(matches!(
            ResponseStream::new(emitter.clone(), "r", "m", 0).fields(&[1, 2]),
            Err(StreamError::Encode(_))
        ));
        let mut stream = ResponseStream::new(emitter, "r", "m", 0);
        assert!(matches!(
            stream.begin_message("msg").await,
            Err(StreamError::OutOfOrder {
                call: "begin_message",
                ..
            })
        ));
        assert!(matches!(
            stream.complete(&serde_json::json!({})).await,
            Err(StreamError::OutOfOrder {
                call: "complete",
                ..
            })
        ));
        stream.start().await.unwrap();
        assert!(matches!(
            stream.start().await,
            Err(StreamError::OutOfOrder { call: "start", .. })
        ));
        assert!(matches!(
            stream.text_delta("x").await,
            Err(StreamError::OutOfOrder {
                call: "text_delta",
                ..
            })
        ));
        assert!(matches!(
            stream.end_message().await,
            Err(StreamError::OutOfOrder {
                call: "end_message",
                ..
            })
        ));
        stream.begin_message("msg_a").await.unwrap();
        assert!(matches!(
            stream.begin_message("msg_b").await,
            Err(StreamError::OutOfOrder {
                call: "begin_message",
                ..
            })
        ));
        assert!(matches!(
            stream.complete(&serde_json::json!({"model": "x"})).await,
            Err(StreamError::Encode(_))
        ));
        stream.text_delta("a").await.unwrap();
        // Completing closes the open message first.
        stream.complete(&serde_json::json!({})).await.unwrap();
        drop(stream);
        let text = written(body).await;
        let names: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (n, line) in text.lines().filter(|l| l.starts_with("data: ")).enumerate() {
            assert!(
                line.ends_with(&format!(r#""sequence_number":{n}}}"#)),
                "{line}"
            );
        }
    }
}
