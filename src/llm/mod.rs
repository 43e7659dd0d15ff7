//! The streaming wire formats of the LLM APIs that official SDKs speak: OpenAI Chat
//! Completions ([`ChatCompletionStream`]), OpenAI Responses ([`ResponseStream`]) and Anthropic
//! Messages ([`MessageStream`]).
//!
//! Each writer sits on an [`SseEmitter`] and writes what its protocol fixes (ids, event names,
//! indexes, sequence numbers, the order of events, the one terminal event) while the content
//! is yours: any `serde::Serialize` value, `serde_json::Value` or your own structs. A call the
//! protocol does not allow at that point is refused with [`StreamError::OutOfOrder`] and
//! nothing is written, so a writer cannot produce a stream the SDKs would misread.
//!
//! Every event carries JSON data and none carries an `id:` (the SDKs decode each event's data
//! as JSON and some keep the last id): serve these streams behind an
//! [`SseLayer`](crate::SseLayer) whose keep-alives are comments (its default) and that writes
//! no plain-text final events.
//!
//! ```
//! use tower_sse::llm::ChatCompletionStream;
//!
//! # async fn handler() -> http::Response<tower_sse::SseBody<tower_sse::EventReceiver>> {
//! let (emitter, body) = tower_sse::channel(16);
//! let mut chunks = ChatCompletionStream::new(emitter, "chatcmpl-1", "my-model", 1_700_000_000);
//! tokio::spawn(async move {
//!     for token in ["Hel", "lo"] {
//!         if chunks.content(token).await.is_err() {
//!             return; // the client is gone
//!         }
//!     }
//!     let _ = chunks.finish(0, "stop").await;
//!     let _ = chunks.done().await; // `data: [DONE]`, then the end of the response
//! });
//! tower_sse::response(body)
//! # }
//! ```

mod anthropic;
mod error;
mod openai_chat;
mod openai_responses;

pub use anthropic::{AnthropicError, MessageStream};
pub use error::StreamError;
pub use openai_chat::{ChatCompletionStream, OpenAiError};
pub use openai_responses::ResponseStream;

use serde::Serialize;

use crate::{Event, SseEmitter};

/// An event with JSON data, named or not.
fn json_event<T: Serialize + ?Sized>(name: Option<&str>, data: &T) -> Result<Event, StreamError> {
    let event = match name {
        Some(name) => Event::new().event(name)?,
        None => Event::new(),
    };
    Ok(event.json_data(data)?)
}

/// Sends events in order; the first refusal ends it with the reason.
async fn send_all(
    emitter: &SseEmitter,
    events: impl IntoIterator<Item = Event>,
) -> Result<(), StreamError> {
    for event in events {
        emitter.send(event).await?;
    }
    Ok(())
}

#[cfg(test)]
mod test_support {
    use http_body_util::BodyExt;

    use crate::{EventReceiver, SseBody};

    /// Everything a channel's body writes, as text, once every emitter is gone.
    pub(super) async fn written(body: SseBody<EventReceiver>) -> String {
        let bytes = body
            .collect()
            .await
            .expect("the body ends cleanly")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("event streams are UTF-8")
    }

    /// The wire form of events given as (event name, data) pairs.
    pub(super) fn wire(events: &[(Option<&str>, &str)]) -> String {
        let mut out = String::new();
        for (name, data) in events {
            if let Some(name) = name {
                out.push_str(&format!("event: {name}\n"));
            }
            out.push_str(&format!("data: {data}\n\n"));
        }
        out
    }
}
