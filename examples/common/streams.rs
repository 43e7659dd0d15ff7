//! `POST /stream/{ndjson,jsonl,json-seq,text}` with `{"query": "..."}`: the stand-in model's
//! answer in each of the crate's other framings, for clients that read NDJSON, JSON Lines,
//! JSON text sequences (RFC 7464) or plain text. JSON framings get one `{"piece": "..."}`
//! object per piece; text gets the pieces as they are. Plus [`send_pieces`], the loop every
//! non-SSE route uses to stream an answer through an [`Emitter`].

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt};
use serde::Serialize;
use tower_sse::{
    framed_channel, framed_response,
    framing::{Encode, Framing, JsonLines, JsonSeq, Ndjson, Text},
    BoxError, Emitter,
};
use tracing::info;

use super::{model::Pieces, read_ask, ApiError, Model, CHANNEL_CAPACITY};

/// Every response of these routes, boxed: a stream in one of the framings, or a JSON error.
pub type StreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// One piece of the answer in the JSON framings.
#[derive(Serialize)]
struct Piece {
    piece: String,
}

/// Answers `POST /stream/<framing>`; `framing` is the last path segment.
pub async fn respond<B>(request: Request<B>, framing: &str, model: Model) -> Response<StreamBody>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let framing = framing.to_owned();
    if !["ndjson", "jsonl", "json-seq", "text"].contains(&framing.as_str()) {
        return error(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such framing: {framing:?} (ndjson, jsonl, json-seq or text)"),
        ));
    }
    let ask = match read_ask(request).await {
        Ok(ask) => ask,
        Err(err) => return error(err),
    };
    info!(
        framing,
        total = ask.query.chars().count(),
        "streaming an answer"
    );
    let pieces = model.answer(&ask.query);
    let json = |piece| Piece { piece };
    match framing.as_str() {
        "ndjson" => spawn_stream(Ndjson, pieces, json),
        "jsonl" => spawn_stream(JsonLines, pieces, json),
        "json-seq" => spawn_stream(JsonSeq, pieces, json),
        _ => spawn_stream(Text, pieces, |piece| piece),
    }
}

/// Streams the pieces through a new channel in `framing`, each as `item(piece)`.
fn spawn_stream<F, T>(
    framing: F,
    pieces: Pieces,
    item: impl FnMut(String) -> T + Send + 'static,
) -> Response<StreamBody>
where
    F: Framing + Encode<T> + Encode<<F as Framing>::Item>,
    T: Send + 'static,
    <F as Encode<T>>::Unsent: Send,
    <F as Encode<T>>::Kept: Send,
{
    let (emitter, body) = framed_channel(framing, CHANNEL_CAPACITY);
    tokio::spawn(async move {
        if let Some(sent) = send_pieces(&emitter, pieces, item).await {
            emitter.complete();
            info!(total = sent, "answer complete");
        }
    });
    framed_response(body).map(BodyExt::boxed_unsync)
}

/// Sends each piece of the answer through `emitter` as `item(piece)`, stopping as soon as the
/// stream is over (the client went away, the server is shutting down). Returns how many pieces
/// went out once the model is done; `None` when it stopped early (logged) or failed (the stream
/// then ends with the framing's error record or an abort).
pub async fn send_pieces<F, T>(
    emitter: &Emitter<F>,
    mut pieces: Pieces,
    mut item: impl FnMut(String) -> T,
) -> Option<usize>
where
    F: Framing + Encode<T>,
{
    let mut sent = 0;
    loop {
        // Wait for the model, but stop at once if the stream ends meanwhile.
        let piece = tokio::select! {
            reason = emitter.closed() => {
                info!(sent, "stopped generating: {reason}");
                return None;
            }
            piece = pieces.next() => piece,
        };
        match piece {
            None => return Some(sent),
            Some(Ok(piece)) => {
                if let Err(err) = emitter.send(item(piece)).await {
                    info!(sent, "stopped generating: {err}");
                    return None;
                }
                sent += 1;
            }
            Some(Err(err)) => {
                info!(sent, "the model failed: {err}");
                emitter.complete_with_error(err);
                return None;
            }
        }
    }
}

fn error(err: ApiError) -> Response<StreamBody> {
    err.into_http_response()
        .map(|body| body.map_err(BoxError::from).boxed_unsync())
}
