//! An upstream's stream is untrusted: the SSE parser never panics, and the
//! events it yields do not depend on how the bytes were chunked (the first
//! byte of the input picks the chunk size), up to and including the first
//! error.
#![no_main]

use flywheel_gateway::upstream::sse::{SseError, SseEvent, SseParser};
use libfuzzer_sys::fuzz_target;

/// Small, so that the size limit is reached often.
const LIMIT: usize = 64;

fn events(data: &[u8], chunk: usize) -> Vec<Result<SseEvent, SseError>> {
    let mut parser = SseParser::new(LIMIT);
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        parser.push(piece);
        loop {
            match parser.next_event() {
                Ok(Some(e)) => out.push(Ok(e)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let whole = events(data, data.len());
    let pieces = events(data, usize::from(chunk % 17));
    assert_eq!(whole, pieces, "chunking changed the events");
});
