//! Incremental parsing of a server-sent-event stream into `data:` payloads.
//! OpenAI-compatible providers send one JSON object per event and end with
//! `data: [DONE]`.

// Untrusted bytes (client bodies, upstream answers): a malformed input
// must become an error, never a panic.
#![deny(clippy::indexing_slicing, clippy::panic)]

use bytes::{Buf, BytesMut};

#[derive(Debug, PartialEq, Eq)]
pub enum SseEvent {
    Data(String),
    Done,
}

#[derive(Default)]
pub struct SseParser {
    buf: BytesMut,
    data: String,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if the buffer holds one. Comments and other
    /// fields (`event:`, `id:`, `retry:`) are skipped.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, std::str::Utf8Error> {
        loop {
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                return Ok(None);
            };
            let line = self.buf.get(..nl).unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line)?.to_owned();
            self.buf.advance(nl + 1);
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
}
