//! [`Text`]: a stream of raw UTF-8 text.

use bytes::{Bytes, BytesMut};

use super::{sealed, write_item, Encode, Encoded, Framing, Record, ZERO_COPY_BYTES};
use crate::BoxError;

/// Raw text (`text/plain; charset=utf-8`): the pieces are written as they are, one after the
/// other, for clients that just append what arrives (`curl -N`, a `fetch` reader).
///
/// Text has no way to tell an error from data, so a stream that ends with an error is always
/// aborted, and [`SseLayer`](crate::SseLayer) writes no keep-alive into it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Text;

impl sealed::Sealed for Text {}

impl Framing for Text {
    type Item = Record<Text>;
    const CONTENT_TYPE: &'static str = "text/plain; charset=utf-8";

    fn error_item(&self, _message: &str) -> Option<Record<Text>> {
        None
    }
}

/// Any text: `&str`, `String`, `Box<str>`, `char`...
impl<T: Into<String>> Encode<T> for Text {
    type Unsent = String;
    type Kept = ();

    fn encode(text: T) -> Encoded<Record<Text>, (), String> {
        Ok((Record::new(Bytes::from(text.into())), ()))
    }

    fn unsent(record: Record<Text>, (): ()) -> String {
        // The bytes were a `String` a moment ago.
        String::from_utf8_lossy(record.as_bytes()).into_owned()
    }

    fn write(text: T, frame: &mut BytesMut) -> Result<Option<Bytes>, BoxError> {
        let text = text.into();
        if text.len() >= ZERO_COPY_BYTES {
            return Ok(Some(Bytes::from(text)));
        }
        frame.extend_from_slice(text.as_bytes());
        Ok(None)
    }

    fn write_alone(text: T) -> Result<Bytes, BoxError> {
        Ok(Bytes::from(text.into()))
    }
}

/// The items a text channel carries, already encoded.
impl Encode<Record<Text>> for Text {
    type Unsent = Record<Text>;
    type Kept = ();

    fn encode(record: Record<Text>) -> Encoded<Record<Text>, (), Record<Text>> {
        Ok((record, ()))
    }

    fn unsent(record: Record<Text>, (): ()) -> Record<Text> {
        record
    }

    fn write(record: Record<Text>, frame: &mut BytesMut) -> Result<Option<Bytes>, BoxError> {
        Ok(write_item(record, frame))
    }

    fn write_alone(record: Record<Text>) -> Result<Bytes, BoxError> {
        Ok(sealed::WireItem::into_bytes(record))
    }
}
