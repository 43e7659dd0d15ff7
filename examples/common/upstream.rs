//! The gateway mode: answers streamed from an OpenAI-compatible server (a local Ollama,
//! llama.cpp or vLLM, or any `/chat/completions` endpoint) instead of the stand-in, read with
//! `tower_sse::client`.
//!
//! Set `UPSTREAM_URL` to the server's base URL (plain `http://`: the examples' client has no
//! TLS), `UPSTREAM_MODEL` to its model name and, if it needs one, `UPSTREAM_API_KEY`. Each
//! question becomes `POST {UPSTREAM_URL}/chat/completions` with `"stream": true`, and each
//! `choices[0].delta.content` of its event stream becomes one piece of the answer, unchanged.
//! The request is sent once: a failure is never answered by starting a second generation.
//! Dropping the pieces (the browser left) closes the upstream connection at once, and an
//! upstream that fails or ends before `data: [DONE]` ends the answer with an error.
//!
//! Without the crate's `client` feature the examples build without it, and setting
//! `UPSTREAM_URL` is refused with a message.

#[cfg(feature = "client")]
pub use with_client::{from_env, Upstream};

#[cfg(feature = "client")]
mod with_client {
    use std::time::Duration;

    use futures::{stream, StreamExt};
    use http::{header, HeaderValue, Request, Uri};
    use tower_sse::{
        client::{http_client, EventSource, HttpClient, Messages},
        BoxError,
    };

    use crate::common::model::Pieces;

    /// Reads `UPSTREAM_URL`, `UPSTREAM_MODEL` and `UPSTREAM_API_KEY`: `None` without
    /// `UPSTREAM_URL`, an error message for a setting that cannot work.
    pub fn from_env() -> Result<Option<Upstream>, String> {
        let Ok(base_url) = std::env::var("UPSTREAM_URL") else {
            return Ok(None);
        };
        if !base_url.starts_with("http://") {
            return Err(format!(
                "UPSTREAM_URL={base_url:?} must be a plain http:// URL (the examples' client has no TLS)"
            ));
        }
        let url = format!("{}/chat/completions", base_url.trim_end_matches('/'))
            .parse()
            .map_err(|error| format!("UPSTREAM_URL={base_url:?}: {error}"))?;
        let model = std::env::var("UPSTREAM_MODEL")
            .ok()
            .filter(|model| !model.is_empty())
            .ok_or("UPSTREAM_URL needs UPSTREAM_MODEL, the name of the upstream's model")?;
        let authorization = match std::env::var("UPSTREAM_API_KEY") {
            Ok(key) if !key.is_empty() => {
                let mut value = HeaderValue::try_from(format!("Bearer {key}"))
                    .map_err(|_| "UPSTREAM_API_KEY holds characters a header cannot")?;
                // Kept out of logs and debug output.
                value.set_sensitive(true);
                Some(value)
            }
            _ => None,
        };
        Ok(Some(Upstream {
            url,
            model,
            authorization,
            client: http_client(),
        }))
    }

    /// How long the upstream may send nothing (a local model may think for a while before its
    /// first token) before the answer fails.
    const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

    /// An OpenAI-compatible chat-completions endpoint, with a connection pool shared by every
    /// answer.
    #[derive(Debug, Clone)]
    pub struct Upstream {
        url: Uri,
        model: String,
        authorization: Option<HeaderValue>,
        client: HttpClient,
    }

    impl Upstream {
        /// Streams the upstream's answer to `query`, piece by piece; nothing is sent before the
        /// pieces are first polled.
        pub fn answer(&self, query: &str) -> Pieces {
            let body = serde_json::json!({
                "model": self.model,
                "stream": true,
                "messages": [{ "role": "user", "content": query }],
            });
            let mut request = Request::post(self.url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .expect("a request from a valid URI and constant headers");
            if let Some(authorization) = &self.authorization {
                request
                    .headers_mut()
                    .insert(header::AUTHORIZATION, authorization.clone());
            }
            // A POST with a body: the default policy never sends it twice.
            let messages = EventSource::with_service(self.client.clone(), request)
                .idle_timeout(IDLE_TIMEOUT)
                .stream()
                .messages();
            stream::unfold(Some(messages), next_piece).boxed()
        }
    }

    /// The next non-empty piece of the answer, or its end (`[DONE]`), or the failure that ends
    /// it.
    async fn next_piece(
        messages: Option<Messages>,
    ) -> Option<(Result<String, BoxError>, Option<Messages>)> {
        let mut messages = messages?;
        loop {
            let failure: BoxError = match messages.next().await {
                None => "the upstream ended its stream before `data: [DONE]`".into(),
                Some(Err(error)) => Box::new(error),
                Some(Ok(message)) if message.data == "[DONE]" => return None,
                Some(Ok(message)) => match delta_content(&message.data) {
                    Ok(None) => continue,
                    Ok(Some(piece)) => return Some((Ok(piece), Some(messages))),
                    Err(error) => error,
                },
            };
            return Some((Err(failure), None));
        }
    }

    /// `choices[0].delta.content` of a chunk, `None` if it has none (a role-only or final
    /// chunk), or the upstream's `error`.
    fn delta_content(data: &str) -> Result<Option<String>, BoxError> {
        let mut chunk: serde_json::Value = serde_json::from_str(data)
            .map_err(|error| format!("upstream sent a chunk that is not JSON: {error}"))?;
        if let Some(error) = chunk.get("error") {
            return Err(format!("upstream error: {error}").into());
        }
        match chunk
            .pointer_mut("/choices/0/delta/content")
            .map(serde_json::Value::take)
        {
            Some(serde_json::Value::String(piece)) if !piece.is_empty() => Ok(Some(piece)),
            _ => Ok(None),
        }
    }
}

/// Without the `client` feature, `UPSTREAM_URL` is refused with a message.
#[cfg(not(feature = "client"))]
pub fn from_env() -> Result<Option<Upstream>, String> {
    match std::env::var_os("UPSTREAM_URL") {
        None => Ok(None),
        Some(_) => Err("UPSTREAM_URL needs the crate's `client` feature: \
                        run the example with `--features client` (or `--all-features`)"
            .into()),
    }
}

/// Without the `client` feature there is no upstream: [`from_env`] refuses `UPSTREAM_URL`, so
/// no value of this type exists.
#[cfg(not(feature = "client"))]
#[derive(Debug, Clone)]
pub enum Upstream {}

#[cfg(not(feature = "client"))]
impl Upstream {
    /// Never called: no value of this type exists.
    pub fn answer(&self, _query: &str) -> super::model::Pieces {
        match *self {}
    }
}
