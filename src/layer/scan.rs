//! Event boundaries in a byte stream cut at arbitrary points, found without buffering.

use bytes::{Buf, Bytes};
use memchr::{memchr, memchr2_iter};

use crate::framing::Streaming;

/// Where an event stream stands after the bytes seen so far: how many line terminators ended
/// it since the last byte of event content (CRLF counts once), whether the last byte was a CR
/// that an LF may still join, and whether a comment line between events is being read.
///
/// Two terminators in a row are a blank line: the end of an event. A fresh stream counts as
/// ended, so leading blank lines are no events. Comment lines between events (`: hb`, another
/// layer's keep-alive `:`) are no event content: after them the stream is still between
/// events. The other framings have simpler items: a line (ended by LF) for the JSON framings,
/// any frame for raw text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scanner {
    terminators: u8,
    pending_cr: bool,
    /// The next byte starts a line.
    line_start: bool,
    /// Inside a comment line that started between events.
    in_comment: bool,
    /// Bytes of our own followed a CR: an LF that starts the next inner bytes is the second
    /// half of that CR's CRLF, and must go, or it would end a line of ours.
    skip_lf: bool,
    streaming: Streaming,
}

impl Scanner {
    /// An event stream with nothing in it yet: at a boundary.
    pub(crate) fn new() -> Self {
        Scanner::for_stream(Streaming::Events)
    }

    /// A stream of this kind with nothing in it yet: at a boundary.
    pub(crate) fn for_stream(streaming: Streaming) -> Self {
        Scanner {
            terminators: 2,
            pending_cr: false,
            line_start: true,
            in_comment: false,
            skip_lf: false,
            streaming,
        }
    }

    /// Whether bytes of our own (starting with a field name or a colon) can go in now without
    /// landing inside an event: the stream is between events, at the start of a line. After a
    /// CR, call [`own_bytes_written`](Scanner::own_bytes_written) once they are written.
    pub(crate) fn at_boundary(&self) -> bool {
        match self.streaming {
            Streaming::Events => self.terminators >= 2 && !self.in_comment,
            Streaming::Lines => self.terminators >= 1,
            Streaming::Chunks => true,
        }
    }

    /// Whether the stream can end here without cutting an event short (a trailing CR is a
    /// complete line end when nothing follows).
    pub(crate) fn can_end(&self) -> bool {
        self.at_boundary()
    }

    /// Notes that bytes of our own went in at a boundary (they end with a line end).
    pub(crate) fn own_bytes_written(&mut self) {
        self.skip_lf |= self.pending_cr;
        self.pending_cr = false;
    }

    /// Drops the LF that starts `data` when it completes a CRLF whose CR came before bytes of
    /// our own (see [`own_bytes_written`](Scanner::own_bytes_written)).
    pub(crate) fn strip_joined_lf(&mut self, data: &mut Bytes) {
        if !self.skip_lf || data.is_empty() {
            return;
        }
        self.skip_lf = false;
        if data[0] == b'\n' {
            data.advance(1);
        }
    }

    /// Feeds bytes and returns how many events they complete.
    pub(crate) fn scan(&mut self, mut bytes: &[u8]) -> u64 {
        let mut events = 0;
        while let Some(end) = self.until_event_end(bytes) {
            events += 1;
            bytes = &bytes[end..];
        }
        events
    }

    /// Feeds bytes up to the first blank line that completes an event and returns the offset
    /// just after it, or feeds them all and returns `None` if none does.
    pub(crate) fn until_event_end(&mut self, bytes: &[u8]) -> Option<usize> {
        match self.streaming {
            Streaming::Events => {}
            Streaming::Lines => {
                let Some(at) = memchr(b'\n', bytes) else {
                    if !bytes.is_empty() {
                        self.terminators = 0;
                    }
                    return None;
                };
                self.terminators = 1;
                return Some(at + 1);
            }
            Streaming::Chunks => return (!bytes.is_empty()).then_some(bytes.len()),
        }
        if !bytes.is_empty() {
            self.skip_lf = false;
        }
        let mut next = 0;
        for at in memchr2_iter(b'\n', b'\r', bytes) {
            if at > next {
                self.line_bytes(&bytes[next..at]);
            }
            next = at + 1;
            let byte = bytes[at];
            if byte == b'\n' && self.pending_cr {
                // The second half of a CRLF: the line already ended at the CR.
                self.pending_cr = false;
                continue;
            }
            self.pending_cr = byte == b'\r';
            self.line_start = true;
            if std::mem::take(&mut self.in_comment) {
                // A comment line between events ended: still between events.
                continue;
            }
            match self.terminators {
                0 => self.terminators = 1,
                1 => {
                    self.terminators = 2;
                    return Some(next);
                }
                _ => {}
            }
        }
        if next < bytes.len() {
            self.line_bytes(&bytes[next..]);
        }
        None
    }

    /// Takes the LF that completes a CRLF whose CR ended the stream so far.
    pub(crate) fn joins_pending_cr(&mut self, byte: Option<&u8>) -> bool {
        let joins = self.pending_cr && byte == Some(&b'\n');
        if joins {
            self.pending_cr = false;
        }
        joins
    }

    /// Feeds bytes of one line (no line end among them).
    fn line_bytes(&mut self, bytes: &[u8]) {
        self.pending_cr = false;
        let starts_line = std::mem::replace(&mut self.line_start, false);
        if starts_line && self.terminators >= 2 && bytes[0] == b':' {
            self.in_comment = true;
        } else if !self.in_comment {
            self.terminators = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{Scanner, Streaming};

    fn fed(chunks: &[&[u8]]) -> (Scanner, u64) {
        let mut scanner = Scanner::new();
        let events = chunks.iter().map(|chunk| scanner.scan(chunk)).sum();
        (scanner, events)
    }

    #[test]
    fn empty_stream_is_a_boundary() {
        let (scanner, events) = fed(&[]);
        assert!(scanner.at_boundary());
        assert_eq!(events, 0);
    }

    #[test]
    fn leading_blank_lines_are_no_events() {
        let (scanner, events) = fed(&[b"\n\r\n\r"]);
        assert_eq!(events, 0);
        assert!(scanner.pending_cr, "a trailing CR waits for the next byte");
        assert!(scanner.at_boundary());
        assert!(scanner.can_end());
    }

    #[test]
    fn every_line_ending_style_ends_events() {
        for stream in [
            &b"data: a\n\ndata: b\n\n"[..],
            b"data: a\r\n\r\ndata: b\r\n\r\n",
            b"data: a\r\rdata: b\r\r\n",
            b"data: a\r\n\ndata: b\n\r\n",
        ] {
            let (scanner, events) = fed(&[stream]);
            assert_eq!(events, 2, "{stream:?}");
            assert!(scanner.at_boundary(), "{stream:?}");
        }
    }

    #[test]
    fn crlf_counts_once() {
        let (scanner, events) = fed(&[b"data: a\r\n"]);
        assert_eq!(events, 0);
        assert!(!scanner.can_end());
        let (scanner, events) = fed(&[b"data: a\r", b"\n"]);
        assert_eq!(events, 0);
        assert!(!scanner.can_end());
    }

    #[test]
    fn cuts_anywhere_give_the_same_state() {
        let stream = b"event: x\r\ndata: 1\r\n\r\n: c\rdata: 2\n\n: hb\n:\r\ndata: 3\r\r: x";
        let (whole, whole_events) = fed(&[stream]);
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let (split, events) = fed(&[&stream[..cut], &stream[cut..cut2], &stream[cut2..]]);
                assert_eq!(events, whole_events);
                assert_eq!(split.terminators, whole.terminators);
                assert_eq!(split.pending_cr, whole.pending_cr);
                assert_eq!(split.in_comment, whole.in_comment);
            }
        }
        assert_eq!(whole_events, 3);
        assert!(whole.in_comment && !whole.at_boundary());
    }

    #[test]
    fn mid_event_is_no_boundary() {
        for stream in [
            &b"data: a"[..],
            b"data: a\n",
            b"data: a\r\n",
            b"\n\ndata",
            b"data: a\n: comment inside an event\n",
            b": hb",
        ] {
            let (scanner, _) = fed(&[stream]);
            assert!(!scanner.at_boundary(), "{stream:?}");
            assert!(!scanner.can_end(), "{stream:?}");
        }
    }

    #[test]
    fn comment_lines_between_events_keep_the_boundary() {
        for stream in [
            &b":\n"[..],
            b": hb\n",
            b"data: a\n\n:\n",
            b"data: a\n\n: one\r\n: two\r",
            b"data: a\r\r:\r",
        ] {
            let (scanner, events) = fed(&[stream]);
            assert!(scanner.at_boundary(), "{stream:?}");
            assert!(scanner.can_end(), "{stream:?}");
            assert_eq!(events, u64::from(stream.starts_with(b"data")), "{stream:?}");
        }
    }

    #[test]
    fn an_lf_after_our_bytes_that_completes_a_crlf_goes() {
        let (mut scanner, _) = fed(&[b"data: a\r\n\r"]);
        assert!(scanner.at_boundary());
        scanner.own_bytes_written();
        let mut next = Bytes::from_static(b"\ndata: b\r\n\r\n");
        scanner.strip_joined_lf(&mut next);
        assert_eq!(&next[..], b"data: b\r\n\r\n");
        assert_eq!(scanner.scan(&next), 1);
        // Only the very next byte can be that LF.
        let mut later = Bytes::from_static(b"\n");
        scanner.strip_joined_lf(&mut later);
        assert_eq!(&later[..], b"\n");
    }

    #[test]
    fn until_event_end_stops_after_the_first_event() {
        let mut scanner = Scanner::new();
        let stream = b"data: a\r\n\r\ndata: b\n\n";
        let end = scanner.until_event_end(stream);
        assert_eq!(end, Some(10));
        assert!(scanner.pending_cr);
        assert!(scanner.joins_pending_cr(stream.get(10)));
        assert!(scanner.at_boundary());
        assert!(!scanner.joins_pending_cr(stream.get(11)));
    }

    #[test]
    fn json_framings_end_items_at_each_line_feed() {
        let mut scanner = Scanner::for_stream(Streaming::Lines);
        assert!(scanner.at_boundary());
        assert_eq!(scanner.scan(b"{\"a\":1}\n{\"b\""), 1);
        assert!(!scanner.can_end());
        assert_eq!(scanner.scan(b":2}"), 0);
        assert!(!scanner.at_boundary());
        assert_eq!(scanner.until_event_end(b"\n\x1e{}\n"), Some(1));
        assert!(scanner.at_boundary());
        assert_eq!(scanner.scan(b"\x1e{}\n\r"), 1);
        assert!(!scanner.can_end(), "a CR is content in NDJSON");
    }

    #[test]
    fn text_ends_at_any_frame() {
        let mut scanner = Scanner::for_stream(Streaming::Chunks);
        assert_eq!(scanner.scan(b"half a wor"), 1);
        assert!(scanner.at_boundary() && scanner.can_end());
        assert_eq!(scanner.until_event_end(b"d"), Some(1));
        assert_eq!(scanner.until_event_end(b""), None);
    }
}
