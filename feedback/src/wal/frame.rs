//! Segment header and record framing.
//!
//! A segment file is an 8-byte header ([`SEGMENT_MAGIC`]) followed by
//! frames:
//!
//! ```text
//! len: u32 LE | crc: u32 LE | ts_ms: u64 LE | payload: len bytes
//! ```
//!
//! `payload` is the serde_json encoding of a [`Record`] (sealed as
//! [`super::seal`] describes in a segment that starts with
//! [`SEALED_SEGMENT_MAGIC`]); `crc` is CRC-32
//! (IEEE, crc32fast) of `len`, `ts_ms` and `payload`, so a corrupted length
//! is caught like corrupted data. `ts_ms` repeats the record's time so that
//! opening a log can compute "oldest unshipped" without parsing JSON.
//!
//! JSON was chosen over a compact binary form because the log is short-lived
//! (shipped within seconds), `wal-inspect` and humans can read it, and the
//! event model evolves with `serde(default)` fields without a format bump.
//!
//! Segment bytes are untrusted (torn writes, bit rot, any file dropped into
//! the directory): nothing here indexes or panics, a bad frame is reported.

#![deny(clippy::indexing_slicing, clippy::panic)]

use crate::event::Record;

/// "FWWAL", two zero bytes, format version 1: payloads are JSON.
pub const SEGMENT_MAGIC: &[u8; 8] = b"FWWAL\0\0\x01";
/// Format version 2: the same frames, each payload sealed (AES-256-GCM,
/// [`super::seal`]). Written when the log has an encryption key.
pub const SEALED_SEGMENT_MAGIC: &[u8; 8] = b"FWWAL\0\0\x02";
pub const HEADER_LEN: usize = SEGMENT_MAGIC.len();
/// len + crc + ts_ms.
pub const FRAME_HEADER_LEN: usize = 16;
/// Larger frames are refused on write and treated as corruption on read.
pub const MAX_PAYLOAD_LEN: usize = 64 << 20;

/// Appends one frame for `record` (already encoded as `payload`) to `buf`.
pub fn encode_frame(buf: &mut Vec<u8>, ts_ms: u64, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let ts = ts_ms.to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(&ts);
    h.update(payload);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&h.finalize().to_le_bytes());
    buf.extend_from_slice(&ts);
    buf.extend_from_slice(payload);
}

/// A valid frame found in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the frame's first byte in the segment.
    pub offset: usize,
    pub ts_ms: u64,
    pub payload_start: usize,
    pub payload_end: usize,
}

enum Decoded {
    Frame(Frame),
    /// Not enough bytes left for a whole frame.
    Incomplete,
    /// Bad length or CRC mismatch.
    Invalid,
}

/// A frame header's fields: `len`, `crc`, `ts_ms` (little-endian).
fn split_header(header: [u8; FRAME_HEADER_LEN]) -> ([u8; 4], [u8; 4], [u8; 8]) {
    let [l0, l1, l2, l3, c0, c1, c2, c3, t0, t1, t2, t3, t4, t5, t6, t7] = header;
    (
        [l0, l1, l2, l3],
        [c0, c1, c2, c3],
        [t0, t1, t2, t3, t4, t5, t6, t7],
    )
}

fn decode_at(buf: &[u8], pos: usize) -> Decoded {
    let Some(header) = pos
        .checked_add(FRAME_HEADER_LEN)
        .and_then(|end| buf.get(pos..end))
        .and_then(|h| <[u8; FRAME_HEADER_LEN]>::try_from(h).ok())
    else {
        return Decoded::Incomplete;
    };
    let (len_bytes, crc, ts) = split_header(header);
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_PAYLOAD_LEN {
        return Decoded::Invalid;
    }
    let payload_start = pos + FRAME_HEADER_LEN;
    let payload_end = payload_start + len;
    let Some(payload) = buf.get(payload_start..payload_end) else {
        return Decoded::Incomplete;
    };
    let mut h = crc32fast::Hasher::new();
    h.update(&len_bytes);
    h.update(&ts);
    h.update(payload);
    if h.finalize() != u32::from_le_bytes(crc) {
        return Decoded::Invalid;
    }
    Decoded::Frame(Frame {
        offset: pos,
        ts_ms: u64::from_le_bytes(ts),
        payload_start,
        payload_end,
    })
}

/// The result of scanning a segment's bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    pub frames: Vec<Frame>,
    /// Byte ranges that hold no valid frame but are followed by one
    /// (corruption in the middle: bit rot, or a torn write in a segment that
    /// was not the last).
    pub corrupt: Vec<(usize, usize)>,
    /// Bytes after the last valid frame that form no frame: a write torn by
    /// a crash (on the last segment) or corruption at the end. `None` when
    /// the segment ends exactly after a frame.
    pub tail: Option<(usize, usize)>,
}

impl Scan {
    pub fn corrupt_bytes(&self) -> usize {
        self.corrupt
            .iter()
            .chain(self.tail.iter())
            .map(|(a, b)| b - a)
            .sum()
    }
}

/// Scans a whole segment of JSON payloads (header included): [`scan_with`]
/// resynchronizing on payloads that start with `{"`.
pub fn scan(buf: &[u8]) -> Scan {
    scan_with(buf, &|payload| payload.starts_with(b"{\""))
}

/// Scans a whole segment (header included). After an invalid frame it
/// resynchronizes on the next offset that holds a valid frame whose payload
/// `starts_payload` accepts, so one bad record does not hide the records
/// behind it. The header is not checked here (callers do): scanning starts
/// after it, and a `buf` no longer than the header holds no frames.
pub fn scan_with(buf: &[u8], starts_payload: &dyn Fn(&[u8]) -> bool) -> Scan {
    let mut scan = Scan::default();
    let mut pos = HEADER_LEN;
    while pos < buf.len() {
        match decode_at(buf, pos) {
            Decoded::Frame(f) => {
                pos = f.payload_end;
                scan.frames.push(f);
            }
            Decoded::Incomplete | Decoded::Invalid => match resync(buf, pos + 1, starts_payload) {
                Some(next) => {
                    scan.corrupt.push((pos, next));
                    pos = next;
                }
                None => {
                    scan.tail = Some((pos, buf.len()));
                    break;
                }
            },
        }
    }
    scan
}

/// The first offset at or after `from` that holds a valid frame. A
/// candidate's payload must pass `starts_payload` (a JSON object's `{"`, a
/// sealed payload's known key id) before its CRC is computed: that keeps
/// the search linear in practice.
fn resync(buf: &[u8], from: usize, starts_payload: &dyn Fn(&[u8]) -> bool) -> Option<usize> {
    let last = buf.len().checked_sub(FRAME_HEADER_LEN + 2)?;
    (from..=last).find(|&q| {
        buf.get(q + FRAME_HEADER_LEN..).is_some_and(starts_payload)
            && matches!(decode_at(buf, q), Decoded::Frame(_))
    })
}

/// A frame's payload bytes (`None` when the frame does not lie within `buf`).
pub fn payload<'a>(buf: &'a [u8], frame: &Frame) -> Option<&'a [u8]> {
    buf.get(frame.payload_start..frame.payload_end)
}

/// Decodes a frame's JSON payload (a frame that does not lie within `buf`
/// is an error too).
pub fn decode_record(buf: &[u8], frame: &Frame) -> Result<Record, serde_json::Error> {
    let payload = payload(buf, frame).ok_or_else(|| {
        <serde_json::Error as serde::de::Error>::custom(format!(
            "frame at {} lies outside the segment ({} bytes)",
            frame.offset,
            buf.len()
        ))
    })?;
    serde_json::from_slice(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut buf = SEGMENT_MAGIC.to_vec();
        for (i, p) in payloads.iter().enumerate() {
            encode_frame(&mut buf, i as u64, p);
        }
        buf
    }

    #[test]
    fn scans_valid_frames() {
        let buf = segment(&[b"{\"a\":1}", b"{\"b\":2}"]);
        let s = scan(&buf);
        assert_eq!(s.frames.len(), 2);
        assert_eq!(s.frames[1].ts_ms, 1);
        assert_eq!(
            &buf[s.frames[1].payload_start..s.frames[1].payload_end],
            b"{\"b\":2}"
        );
        assert!(s.corrupt.is_empty() && s.tail.is_none());
    }

    #[test]
    fn resyncs_after_a_corrupt_frame() {
        let mut buf = segment(&[b"{\"a\":1}", b"{\"b\":2}", b"{\"c\":3}"]);
        let second = HEADER_LEN + FRAME_HEADER_LEN + 7;
        buf[second + FRAME_HEADER_LEN + 3] ^= 0xff;
        let s = scan(&buf);
        assert_eq!(
            s.frames.iter().map(|f| f.ts_ms).collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert_eq!(s.corrupt, vec![(second, second + FRAME_HEADER_LEN + 7)]);
        assert!(s.tail.is_none());
    }

    #[test]
    fn short_and_garbage_input_is_not_a_panic() {
        for len in 0..HEADER_LEN + FRAME_HEADER_LEN + 4 {
            let buf = segment(&[b"{\"a\":1}"]);
            let s = scan(&buf[..len.min(buf.len())]);
            assert!(s.frames.is_empty());
        }
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        let s = scan(&garbage);
        assert!(s.frames.is_empty());
        let bogus = Frame {
            offset: 8,
            ts_ms: 0,
            payload_start: 10,
            payload_end: 100,
        };
        assert!(decode_record(&garbage[..50], &bogus).is_err());
        // A length field near u32::MAX is refused, not added past the buffer.
        let mut buf = SEGMENT_MAGIC.to_vec();
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        buf.extend_from_slice(&[0; 12]);
        assert_eq!(scan(&buf).frames.len(), 0);
    }

    #[test]
    fn torn_tail_is_reported() {
        let mut buf = segment(&[b"{\"a\":1}", b"{\"b\":2}"]);
        let full = buf.len();
        buf.truncate(full - 3);
        let s = scan(&buf);
        assert_eq!(s.frames.len(), 1);
        assert_eq!(s.tail, Some((HEADER_LEN + FRAME_HEADER_LEN + 7, full - 3)));
    }
}
