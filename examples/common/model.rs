//! The model behind every route of the examples: a source of answer pieces, the stand-in or,
//! in gateway mode, an upstream server (`upstream.rs`).
//!
//! Routes in any protocol (`/gpt-stream`, and any other the examples serve) ask a [`Model`] for
//! the pieces of an answer and only decide how to write them. The stand-in echoes the question
//! one character (Unicode scalar value) at a time, one piece per `delay`, as the Spring handler
//! of the article does: a piece never splits a UTF-8 sequence, but may split a grapheme such as
//! 👨‍👩‍👧 or e + ◌́, just as a real model's tokens may. Clients must only concatenate the pieces.

use std::{pin::Pin, time::Duration};

use futures::{stream, Stream, StreamExt};

use tower_sse::BoxError;

/// The pieces of one answer, in order; an `Err` ends the answer with that failure.
pub type Pieces = Pin<Box<dyn Stream<Item = Result<String, BoxError>> + Send>>;

/// Where answers come from.
#[derive(Debug, Clone)]
pub enum Model {
    /// The offline stand-in: echoes the question, one character per `delay`.
    Echo {
        /// The pause before each piece.
        delay: Duration,
    },
    /// An OpenAI-compatible server's answer, streamed through (`UPSTREAM_URL`).
    Upstream(Box<super::upstream::Upstream>),
}

impl Model {
    /// The pieces of the answer to `query`, produced lazily: nothing is generated before the
    /// stream is polled, and dropping it stops the generation.
    pub fn answer(&self, query: &str) -> Pieces {
        match self {
            Model::Echo { delay } => echo(query.to_owned(), *delay),
            Model::Upstream(upstream) => upstream.answer(query),
        }
    }
}

/// The stand-in: one character of `query` per `delay`.
fn echo(query: String, delay: Duration) -> Pieces {
    let pieces: Vec<String> = query.chars().map(String::from).collect();
    stream::iter(pieces)
        .then(move |piece| async move {
            // With no delay it answers as fast as the client reads (even a zero-length timer
            // would take a tick).
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(piece)
        })
        .boxed()
}
