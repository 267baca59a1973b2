//! Incremental parsing of a server-sent-event stream into `data:` payloads.
//! OpenAI-compatible providers send one JSON object per event and end with
//! `data: [DONE]`.
//!
//! The input is an upstream's: each byte is scanned once however the stream
//! is chunked (a scan position survives between chunks), and an event (or a
//! line still being received) larger than the limit is an error instead of
//! a buffer that grows without end.

// Untrusted bytes (client bodies, upstream answers): a malformed input
// must become an error, never a panic.
#![deny(clippy::indexing_slicing, clippy::string_slice, clippy::panic)]

use bytes::BytesMut;

/// The default of `upstream.max_sse_event_bytes`.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum SseEvent {
    Data(String),
    Done,
}

/// A stream the parser cannot go on with; the attempt fails as a bad answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("stream is not UTF-8")]
    NotUtf8,
    #[error("stream event larger than {limit} bytes (upstream.max_sse_event_bytes)")]
    TooLarge { limit: usize },
}

pub struct SseParser {
    buf: BytesMut,
    /// Bytes at the start of `buf` already known to hold no newline.
    scanned: usize,
    /// `data:` of the event being read.
    data: String,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser that refuses events (and lines) over `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            data: String::new(),
            max_event_bytes,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if the buffer holds one. Comments and other
    /// fields (`event:`, `id:`, `retry:`) are skipped.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            let unscanned = self.buf.get(self.scanned..).unwrap_or_default();
            let Some(offset) = unscanned.iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                // A line still arriving counts toward its event already,
                // less a last '\r' that the next byte may make a line end:
                // the verdict must not depend on where a chunk ends.
                let pending = self.buf.len() - usize::from(self.buf.last() == Some(&b'\r'));
                return if self.data.len() + pending > self.max_event_bytes {
                    Err(self.too_large())
                } else {
                    Ok(None)
                };
            };
            let line = self.buf.split_to(self.scanned + offset + 1);
            self.scanned = 0;
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if self.data.len() + line.len() > self.max_event_bytes {
                return Err(self.too_large());
            }
            let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
            if line.is_empty() {
                if self.data.is_empty() {
                    continue;
                }
                let data = std::mem::take(&mut self.data);
                return Ok(Some(if data == "[DONE]" {
                    SseEvent::Done
                } else {
                    SseEvent::Data(data)
                }));
            }
            if let Some(value) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
    }

    fn too_large(&self) -> SseError {
        SseError::TooLarge {
            limit: self.max_event_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_events() {
        let mut p = SseParser::default();
        p.push(b"data: {\"a\":");
        assert_eq!(p.next_event().unwrap(), None);
        p.push(b"1}\n\n: comment\n\ndata: [DONE]\r\n\r\n");
        assert_eq!(
            p.next_event().unwrap(),
            Some(SseEvent::Data("{\"a\":1}".into()))
        );
        assert_eq!(p.next_event().unwrap(), Some(SseEvent::Done));
        assert_eq!(p.next_event().unwrap(), None);
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut p = SseParser::default();
        p.push(b"data: \xff\xfe\n\n");
        assert_eq!(p.next_event(), Err(SseError::NotUtf8));
    }

    #[test]
    fn the_limit_is_configurable_and_inclusive() {
        let mut p = SseParser::new(16);
        p.push(b"data: 0123456789\n\n");
        assert_eq!(
            p.next_event().unwrap(),
            Some(SseEvent::Data("0123456789".into()))
        );
        p.push(b"data: 0123456789a\n\n");
        assert_eq!(p.next_event(), Err(SseError::TooLarge { limit: 16 }));
    }

    /// Found by `scripts/fuzz.sh sse`: a line of exactly the limit ended
    /// by CRLF was refused when its '\r' arrived in one chunk and its '\n'
    /// in the next (the '\r' counted), and accepted when it came whole.
    #[test]
    fn a_crlf_line_at_the_limit_is_accepted_however_it_is_chunked() {
        let stream = b"data: 0123456789\r\n\r\n";
        let mut whole = SseParser::new(16);
        whole.push(stream);
        let whole = whole.next_event();
        assert_eq!(whole, Ok(Some(SseEvent::Data("0123456789".into()))));
        let mut bytes = SseParser::new(16);
        let mut got = Ok(None);
        for b in stream {
            bytes.push(std::slice::from_ref(b));
            got = bytes.next_event();
            if !matches!(got, Ok(None)) {
                break;
            }
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn a_line_over_the_limit_is_an_error_before_it_ends() {
        let mut p = SseParser::default();
        let chunk = vec![b'a'; 64 * 1024];
        let mut result = Ok(None);
        // No newline ever: the parser must give up, not buffer forever.
        for _ in 0..64 {
            p.push(&chunk);
            result = p.next_event();
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err(), "4 MiB without a newline was accepted");
    }

    #[test]
    fn an_event_of_many_lines_over_the_limit_is_an_error() {
        let mut p = SseParser::default();
        let line = format!("data: {}\n", "b".repeat(1023));
        let mut result = Ok(None);
        // Short lines, but no blank line to end the event.
        for _ in 0..4096 {
            p.push(line.as_bytes());
            result = p.next_event();
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err(), "a 4 MiB event was accepted");
    }

    #[test]
    fn a_long_line_in_small_chunks_is_scanned_once() {
        // 512 KiB in 64-byte chunks: rescanning the buffer on every chunk
        // reads ~2 GB; a scan position reads each byte once.
        let mut p = SseParser::default();
        let start = std::time::Instant::now();
        p.push(b"data: ");
        for _ in 0..8192 {
            p.push(&[b'c'; 64]);
            assert_eq!(p.next_event().unwrap(), None);
        }
        p.push(b"\n\n");
        let Some(SseEvent::Data(data)) = p.next_event().unwrap() else {
            panic!("the event")
        };
        assert_eq!(data.len(), 512 * 1024);
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
    }
}
