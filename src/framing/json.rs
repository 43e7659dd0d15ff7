//! The JSON framings: [`Ndjson`], [`JsonLines`] and [`JsonSeq`], one JSON text per item.
//!
//! All three write compact JSON straight from any `serde::Serialize` value. Compact JSON never
//! holds a line break; a raw value may (a `serde_json::value::RawValue` of pretty-printed
//! JSON), but only as whitespace between tokens, since JSON strings cannot hold raw control
//! characters. Such breaks are written as spaces, so one item is always exactly one line and
//! still the same JSON.
//!
//! Strings also escape U+2028, U+2029 and U+0085 (`\u2028`...), which JSON allows raw but
//! which many line readers split lines at (Python's `str.splitlines`, used by `httpx` and so
//! by the `ollama` client; JavaScript line terminators). Go's encoder, and so Ollama, escapes
//! the first two too.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::ser::Formatter;

use super::{reserve_first, sealed, write_item, Encode, Encoded, Framing, Record};
use crate::BoxError;

/// The room an encoded item starts with: a typical streamed JSON object fits without regrowing.
const ITEM_CAPACITY: usize = 128;

/// Newline-delimited JSON (`application/x-ndjson`), as Ollama streams it: one compact JSON
/// value per line. [`SseLayer`](crate::SseLayer) writes no keep-alive into it (its clients
/// parse every line as JSON), and a stream that ends with an error, when asked to say so, ends
/// with the line `{"error":"<message>"}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ndjson;

/// JSON Lines (`application/jsonl`): one compact JSON value per line, the same bytes as
/// [`Ndjson`] under the content type of <https://jsonlines.org>.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonLines;

/// JSON text sequences (RFC 7464, `application/json-seq`): each item is the record separator
/// (RS, `0x1E`), a compact JSON value and a line feed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonSeq;

/// What tells the JSON framings apart: their content type and what goes before each value.
pub trait JsonFraming:
    Clone + Copy + Default + std::fmt::Debug + Send + Sync + Unpin + 'static
{
    /// The `content-type` of a response in this framing.
    const CONTENT_TYPE: &'static str;
    /// The bytes before each JSON value (each ends with a line feed).
    const PREFIX: &'static [u8];
}

impl JsonFraming for Ndjson {
    const CONTENT_TYPE: &'static str = "application/x-ndjson";
    const PREFIX: &'static [u8] = b"";
}

impl JsonFraming for JsonLines {
    const CONTENT_TYPE: &'static str = "application/jsonl";
    const PREFIX: &'static [u8] = b"";
}

impl JsonFraming for JsonSeq {
    const CONTENT_TYPE: &'static str = "application/json-seq";
    const PREFIX: &'static [u8] = b"\x1e";
}

impl sealed::Sealed for Ndjson {}
impl sealed::Sealed for JsonLines {}
impl sealed::Sealed for JsonSeq {}

/// Every JSON framing in one implementation.
impl<F: JsonFraming + sealed::Sealed> Framing for F {
    type Item = Record<F>;
    const CONTENT_TYPE: &'static str = <F as JsonFraming>::CONTENT_TYPE;

    fn error_item(&self, message: &str) -> Option<Record<F>> {
        let mut out = Vec::with_capacity(F::PREFIX.len() + message.len() + 16);
        out.extend_from_slice(F::PREFIX);
        out.extend_from_slice(b"{\"error\":");
        // A string always serialises.
        to_writer(&mut out, message).ok()?;
        out.extend_from_slice(b"}\n");
        Some(Record::new(Bytes::from(out)))
    }
}

/// Any serde value, encoded as one item.
impl<F: JsonFraming + sealed::Sealed, T: serde::Serialize> Encode<T> for F {
    type Unsent = T;
    type Kept = T;

    fn encode(value: T) -> Encoded<Record<F>, T, T> {
        let mut out = Vec::with_capacity(ITEM_CAPACITY);
        out.extend_from_slice(F::PREFIX);
        match to_writer(&mut out, &value) {
            Ok(()) => {
                out.push(b'\n');
                Ok((Record::new(Bytes::from(out)), value))
            }
            Err(err) => Err((value, err.into())),
        }
    }

    fn unsent(_item: Record<F>, value: T) -> T {
        value
    }

    fn write(value: T, frame: &mut BytesMut) -> Result<Option<Bytes>, BoxError> {
        // Also for a value alone, whose frame starts empty: serde would grow it step by step.
        reserve_first(frame);
        let start = frame.len();
        frame.extend_from_slice(F::PREFIX);
        if let Err(err) = to_writer(frame.writer(), &value) {
            // Nothing of a value that failed goes out.
            frame.truncate(start);
            return Err(err.into());
        }
        frame.put_u8(b'\n');
        Ok(None)
    }
}

/// The items a channel of a JSON framing carries, already encoded.
impl<F: JsonFraming + sealed::Sealed> Encode<Record<F>> for F {
    type Unsent = Record<F>;
    type Kept = ();

    fn encode(record: Record<F>) -> Encoded<Record<F>, (), Record<F>> {
        Ok((record, ()))
    }

    fn unsent(record: Record<F>, (): ()) -> Record<F> {
        record
    }

    fn write(record: Record<F>, frame: &mut BytesMut) -> Result<Option<Bytes>, BoxError> {
        Ok(write_item(record, frame))
    }

    fn write_alone(record: Record<F>) -> Result<Bytes, BoxError> {
        Ok(sealed::WireItem::into_bytes(record))
    }
}

/// Serialises `value` as compact JSON whose strings escape the characters line readers split
/// at.
fn to_writer<W: io::Write, T: serde::Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> serde_json::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(writer, OneLine);
    value.serialize(&mut serializer)
}

/// Compact JSON (the `Formatter` defaults) that also escapes U+2028, U+2029 and U+0085 in
/// strings and writes the line breaks of raw JSON as spaces.
struct OneLine;

impl Formatter for OneLine {
    #[inline]
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        // Keys and most values: nothing to look for.
        if bytes.is_ascii() {
            return writer.write_all(bytes);
        }
        let mut start = 0;
        // U+2028 and U+2029 are E2 80 A8/A9 in UTF-8, U+0085 is C2 85.
        for at in memchr::memchr2_iter(0xE2, 0xC2, bytes) {
            let escape: &[u8] = match &bytes[at..] {
                [0xE2, 0x80, 0xA8, ..] => b"\\u2028",
                [0xE2, 0x80, 0xA9, ..] => b"\\u2029",
                [0xC2, 0x85, ..] => b"\\u0085",
                _ => continue,
            };
            writer.write_all(&bytes[start..at])?;
            writer.write_all(escape)?;
            start = at + if bytes[at] == 0xE2 { 3 } else { 2 };
        }
        writer.write_all(&bytes[start..])
    }

    /// Raw JSON (a `RawValue`) may hold line breaks, as whitespace between tokens only: they
    /// are written as spaces.
    fn write_raw_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        if memchr::memchr2(b'\n', b'\r', bytes).is_none() {
            return writer.write_all(bytes);
        }
        let spaced: Vec<u8> = bytes
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .collect();
        writer.write_all(&spaced)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use serde_json::value::RawValue;

    use super::*;

    fn encoded<F: JsonFraming + sealed::Sealed, T: serde::Serialize>(value: T) -> Vec<u8> {
        let (record, _) = <F as Encode<T>>::encode(value).unwrap_or_else(|_| panic!("encodes"));
        let mut frame = BytesMut::new();
        assert!(<F as Encode<Record<F>>>::write(record.clone(), &mut frame)
            .unwrap()
            .is_none());
        assert_eq!(&frame[..], &record.as_bytes()[..]);
        record.as_bytes().to_vec()
    }

    #[test]
    fn each_framing_writes_one_value_per_item() {
        let value = serde_json::json!({"a": "x\ny", "b": [1, 2]});
        assert_eq!(
            encoded::<Ndjson, _>(&value),
            b"{\"a\":\"x\\ny\",\"b\":[1,2]}\n"
        );
        assert_eq!(
            encoded::<JsonLines, _>(&value),
            b"{\"a\":\"x\\ny\",\"b\":[1,2]}\n"
        );
        assert_eq!(
            encoded::<JsonSeq, _>(&value),
            b"\x1e{\"a\":\"x\\ny\",\"b\":[1,2]}\n"
        );
    }

    #[test]
    fn raw_line_breaks_become_spaces() {
        let raw = RawValue::from_string("{\n  \"a\": 1,\r\n  \"b\": \"two\"\n}".into()).unwrap();
        let line = encoded::<Ndjson, _>(&raw);
        assert_eq!(line, b"{   \"a\": 1,    \"b\": \"two\" }\n");
        let back: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, serde_json::json!({"a": 1, "b": "two"}));
        let mut frame = BytesMut::new();
        <Ndjson as Encode<_>>::write(&raw, &mut frame).unwrap();
        assert_eq!(&frame[..], &line[..]);
    }

    #[test]
    fn a_value_that_fails_to_serialise_writes_nothing() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(vec![1u8], 1);
        let mut frame = BytesMut::from(&b"before\n"[..]);
        assert!(<Ndjson as Encode<_>>::write(&map, &mut frame).is_err());
        assert_eq!(&frame[..], b"before\n");
        let (back, _err) = <Ndjson as Encode<_>>::encode(map.clone()).unwrap_err();
        assert_eq!(back, map);
    }

    #[test]
    fn line_separators_in_strings_are_escaped() {
        let text = "a\u{2028}b\u{2029}c\u{85}d é ✓ \u{e2}";
        let line = encoded::<Ndjson, _>(text);
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "\"a\\u2028b\\u2029c\\u0085d é ✓ \u{e2}\"\n"
        );
        let back: String = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, text);
        let mut frame = BytesMut::new();
        <Ndjson as Encode<_>>::write(text, &mut frame).unwrap();
        assert_eq!(&frame[..], &line[..]);
    }

    #[test]
    fn error_records_are_json() {
        let record = Ndjson.error_item("bad \"quote\"\n").unwrap();
        assert_eq!(
            &record.as_bytes()[..],
            b"{\"error\":\"bad \\\"quote\\\"\\n\"}\n"
        );
        let record = JsonSeq.error_item("x").unwrap();
        assert_eq!(&record.as_bytes()[..], b"\x1e{\"error\":\"x\"}\n");
    }
}
