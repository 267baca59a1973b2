//! Incremental checks on an SSE body without buffering it: when the first
//! `data:` event arrives (TTFT) and whether the body ends with `data: [DONE]`.

const DATA: &[u8] = b"data:";
const DONE: &[u8] = b"data: [DONE]";
/// Enough trailing bytes to match either marker across a frame boundary.
const KEEP: usize = 32;

#[derive(Default)]
pub struct StreamCheck {
    tail: Vec<u8>,
    seen_data: bool,
}

impl StreamCheck {
    /// Feeds one body frame; returns true when it holds the first `data:`.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        let first = !self.seen_data && {
            // Look across the boundary: the end of the previous frame plus this one.
            let carry = self.tail.len().min(DATA.len() - 1);
            let from = self.tail.len() - carry;
            let mut joined = Vec::with_capacity(carry + chunk.len().min(64));
            joined.extend_from_slice(&self.tail[from..]);
            joined.extend_from_slice(chunk);
            find(&joined, DATA)
        };
        self.seen_data |= first;
        if chunk.len() >= KEEP {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - KEEP..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(KEEP);
            self.tail.drain(..excess);
        }
        first
    }

    /// Whether everything fed so far ends with `data: [DONE]` (trailing
    /// whitespace allowed).
    pub fn ends_with_done(&self) -> bool {
        let end = self
            .tail
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        self.tail[..end].ends_with(DONE)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_first_data_and_done_across_frames() {
        let mut c = StreamCheck::default();
        assert!(!c.feed(b": keep-alive\n\nda"));
        assert!(c.feed(b"ta: {\"x\":1}\n\n"));
        assert!(!c.feed(b"data: {\"x\":2}\n\n"));
        assert!(!c.ends_with_done());
        c.feed(b"data: [DO");
        c.feed(b"NE]\n\n");
        assert!(c.ends_with_done());
    }

    #[test]
    fn truncated_stream_is_not_done() {
        let mut c = StreamCheck::default();
        c.feed(b"data: {\"choices\":[]}\n\ndata: {this is not json\n\n");
        assert!(!c.ends_with_done());
    }
}
