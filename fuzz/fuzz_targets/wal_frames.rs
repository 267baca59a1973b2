//! Segment bytes are untrusted (torn writes, bit rot, any file dropped into
//! the log directory): scanning and decoding them never panics, every frame
//! found lies inside the segment, in order, and sealed payloads open only
//! as they were sealed.
#![no_main]

use std::sync::LazyLock;

use flywheel_feedback::wal::{frame, Keyring};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<Keyring> = LazyLock::new(|| {
    Keyring::from_hex(
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        &[],
    )
    .expect("a valid key")
});

fn frames_lie_inside(buf: &[u8], scan: &frame::Scan) {
    let mut end = frame::HEADER_LEN;
    for f in &scan.frames {
        assert!(f.offset >= end, "frames overlap or go backwards");
        assert!(f.payload_start <= f.payload_end && f.payload_end <= buf.len());
        end = f.payload_end;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut buf = frame::SEGMENT_MAGIC.to_vec();
    buf.extend_from_slice(data);
    let scan = frame::scan(&buf);
    frames_lie_inside(&buf, &scan);
    for f in &scan.frames {
        let _ = frame::decode_record(&buf, f);
    }
    let sealed = frame::scan_with(&buf, &|p| KEYS.knows(p));
    frames_lie_inside(&buf, &sealed);
    for f in &sealed.frames {
        if let Some(p) = frame::payload(&buf, f) {
            let _ = KEYS.open(f.ts_ms, p);
        }
    }
    // Whatever is sealed opens to itself, and only at its own time.
    let s = KEYS.seal(7, data).expect("seal");
    assert_eq!(KEYS.open(7, &s).expect("open"), data);
    assert!(KEYS.open(8, &s).is_err());
});
