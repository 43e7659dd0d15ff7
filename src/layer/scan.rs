//! Event boundaries in a byte stream cut at arbitrary points, found without buffering.

use memchr::{memchr, memchr2_iter};

use crate::framing::Streaming;

/// Where an event stream stands after the bytes seen so far: how many line terminators ended
/// it since the last other byte (CRLF counts once), and whether the last byte was a CR that an
/// LF may still join.
///
/// Two terminators in a row are a blank line: the end of an event. A fresh stream counts as
/// ended, so leading blank lines are no events. The other framings have simpler items: a line
/// (ended by LF) for the JSON framings, any frame for raw text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scanner {
    terminators: u8,
    pending_cr: bool,
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
            streaming,
        }
    }

    /// Whether bytes of our own can go in now without landing inside an event: the stream
    /// ends an event and the next byte cannot be the LF of a CRLF.
    pub(crate) fn at_boundary(&self) -> bool {
        self.can_end() && !self.pending_cr
    }

    /// Whether the stream can end here without cutting an event short (a trailing CR is a
    /// complete line end when nothing follows).
    pub(crate) fn can_end(&self) -> bool {
        match self.streaming {
            Streaming::Events => self.terminators >= 2,
            Streaming::Lines => self.terminators >= 1,
            Streaming::Chunks => true,
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
                        self.content();
                    }
                    return None;
                };
                self.terminators = 1;
                return Some(at + 1);
            }
            Streaming::Chunks => return (!bytes.is_empty()).then_some(bytes.len()),
        }
        let mut next = 0;
        for at in memchr2_iter(b'\n', b'\r', bytes) {
            if at > next {
                self.content();
            }
            next = at + 1;
            let byte = bytes[at];
            if byte == b'\n' && self.pending_cr {
                // The second half of a CRLF: the line already ended at the CR.
                self.pending_cr = false;
                continue;
            }
            self.pending_cr = byte == b'\r';
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
            self.content();
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

    fn content(&mut self) {
        self.terminators = 0;
        self.pending_cr = false;
    }
}

#[cfg(test)]
mod tests {
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
        assert!(
            !scanner.at_boundary(),
            "a trailing CR waits for the next byte"
        );
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
        let stream = b"event: x\r\ndata: 1\r\n\r\n: c\rdata: 2\n\ndata: 3\r\r";
        let (whole, whole_events) = fed(&[stream]);
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let (split, events) = fed(&[&stream[..cut], &stream[cut..cut2], &stream[cut2..]]);
                assert_eq!(events, whole_events);
                assert_eq!(split.terminators, whole.terminators);
                assert_eq!(split.pending_cr, whole.pending_cr);
            }
        }
        assert_eq!(whole_events, 3);
    }

    #[test]
    fn mid_event_is_no_boundary() {
        for stream in [&b"data: a"[..], b"data: a\n", b"data: a\r\n", b"\n\ndata"] {
            let (scanner, _) = fed(&[stream]);
            assert!(!scanner.at_boundary(), "{stream:?}");
            assert!(!scanner.can_end(), "{stream:?}");
        }
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

    #[test]
    fn until_event_end_stops_after_the_first_event() {
        let mut scanner = Scanner::new();
        let stream = b"data: a\r\n\r\ndata: b\n\n";
        let end = scanner.until_event_end(stream);
        assert_eq!(end, Some(10));
        assert!(!scanner.at_boundary());
        assert!(scanner.joins_pending_cr(stream.get(10)));
        assert!(scanner.at_boundary());
        assert!(!scanner.joins_pending_cr(stream.get(11)));
    }
}
