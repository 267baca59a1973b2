//! Encryption at rest of the log's records: AES-256-GCM (ring), one sealed
//! payload per frame.
//!
//! The log holds whole prompts and answers until they ship, and longer in
//! `quarantine/`. With a key configured (`capture.encryption_key_file` or
//! `capture.encryption_key_env`) every new segment is written with
//! [`SEALED_SEGMENT_MAGIC`](super::frame::SEALED_SEGMENT_MAGIC) and each
//! frame's payload is
//!
//! ```text
//! key id: 4 bytes | nonce: 12 bytes | AES-256-GCM(JSON record) | tag: 16 bytes
//! ```
//!
//! with the frame's `ts_ms` as associated data, so a frame's time cannot be
//! changed without failing its tag. The frame's CRC still covers the sealed
//! bytes: torn writes are found without the key, as before.
//!
//! **Keys** are 32 random bytes written as 64 hex digits (`openssl rand -hex
//! 32`). A key's id is the first 4 bytes of its SHA-256, so nothing but the
//! key needs configuring, and a frame names the key it needs without
//! revealing it.
//!
//! **Nonces** are never repeated under one key: 8 random bytes drawn when
//! the keyring is made (each process start) and again every 2^32 frames,
//! followed by a 4-byte counter. Two draws collide with probability 2^-64
//! per pair, where random 12-byte nonces would reach NIST's 2^-32 bound
//! after 2^32 frames (12 days at 4000 requests a second).
//!
//! **Rotation**: put the new key in `encryption_key_file` (or the variable)
//! and the old one in `encryption_old_key_files`, then restart. New frames
//! use the new key; segments written before still ship, because a frame is
//! opened with whichever key its id names. Drop the old key once no segment
//! written with it is left (`flywheel-feedback wal-inspect` shows each
//! segment's key ids; unshipped segments normally ship within seconds, but
//! `quarantine/` keeps damaged ones until a person looks).
//!
//! What it does not protect: records in memory and in ClickHouse (encrypt
//! ClickHouse's disks for that), and a key readable by whoever can read the
//! log directory.

use std::{fmt, sync::Mutex};

use ring::{
    aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN},
    rand::{SecureRandom, SystemRandom},
};
use sha2::{Digest, Sha256};

/// Key id + nonce before the ciphertext, the tag after it.
pub const SEALED_OVERHEAD: usize = KEY_ID_LEN + NONCE_LEN + TAG_LEN;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// Why a key could not be used or a payload not opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "an encryption key must be 64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`; {0}"
    )]
    BadKey(String),
    #[error("the system's random number generator failed")]
    Random,
    #[error("the payload is too long for AES-GCM")]
    TooLong,
    #[error("the payload is sealed with key {0}, which is not configured")]
    UnknownKey(String),
    #[error("the sealed payload is shorter than its key id, nonce and tag")]
    Short,
    #[error(
        "the sealed payload does not open with key {0}: altered, or another key with the same id"
    )]
    Tampered(String),
}

struct Key {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

impl Key {
    fn from_hex(hex: &str) -> Result<Key, SealError> {
        let hex = hex.trim();
        if hex.len() != 2 * KEY_LEN {
            return Err(SealError::BadKey(format!("got {} characters", hex.len())));
        }
        let mut bytes = [0u8; KEY_LEN];
        for (b, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let digits = std::str::from_utf8(pair).ok();
            *b = digits
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| {
                    SealError::BadKey("found a character that is not a hex digit".into())
                })?;
        }
        let digest = Sha256::digest(bytes);
        let id = [digest[0], digest[1], digest[2], digest[3]];
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| SealError::BadKey("ring refused it".into()))?;
        Ok(Key {
            id,
            key: LessSafeKey::new(key),
        })
    }
}

fn show_id(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The keys of a log: the current one seals, every one opens.
pub struct Keyring {
    current: Key,
    old: Vec<Key>,
    nonces: Mutex<Nonces>,
    rng: SystemRandom,
}

/// A random 8-byte prefix and a counter under it (module docs).
struct Nonces {
    prefix: [u8; 8],
    next: u32,
}

impl Keyring {
    /// The current key and older ones (to open segments written with them),
    /// each as 64 hex digits.
    pub fn from_hex(current: &str, old: &[String]) -> Result<Keyring, SealError> {
        let rng = SystemRandom::new();
        let mut prefix = [0u8; 8];
        rng.fill(&mut prefix).map_err(|_| SealError::Random)?;
        Ok(Keyring {
            current: Key::from_hex(current)?,
            old: old
                .iter()
                .map(|k| Key::from_hex(k))
                .collect::<Result<_, _>>()?,
            nonces: Mutex::new(Nonces { prefix, next: 0 }),
            rng,
        })
    }

    /// The current key's id, as hex.
    pub fn current_id(&self) -> String {
        show_id(&self.current.id)
    }

    /// The id of the key a sealed payload names, as hex.
    pub fn payload_key_id(sealed: &[u8]) -> Option<String> {
        sealed.get(..KEY_ID_LEN).map(show_id)
    }

    /// Whether a payload starts with the id of one of these keys (how a
    /// damaged segment's scan finds the next frame).
    pub fn knows(&self, sealed: &[u8]) -> bool {
        sealed
            .get(..KEY_ID_LEN)
            .is_some_and(|id| self.keys().any(|k| k.id == id))
    }

    fn keys(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.current).chain(&self.old)
    }

    fn nonce(&self) -> Result<[u8; NONCE_LEN], SealError> {
        let mut n = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        if n.next == u32::MAX {
            self.rng
                .fill(&mut n.prefix)
                .map_err(|_| SealError::Random)?;
            n.next = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        let (head, tail) = nonce.split_at_mut(8);
        head.copy_from_slice(&n.prefix);
        tail.copy_from_slice(&n.next.to_be_bytes());
        n.next += 1;
        Ok(nonce)
    }

    /// `plain` sealed with the current key, `ts_ms` bound to it.
    pub fn seal(&self, ts_ms: u64, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = self.nonce()?;
        let mut out = Vec::with_capacity(plain.len() + SEALED_OVERHEAD);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let mut body = out.split_off(KEY_ID_LEN + NONCE_LEN);
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ts_ms.to_le_bytes()),
                &mut body,
            )
            .map_err(|_| SealError::TooLong)?;
        out.append(&mut body);
        Ok(out)
    }

    /// The plain bytes of a payload sealed by [`Keyring::seal`] with any of
    /// these keys and the same `ts_ms`.
    pub fn open(&self, ts_ms: u64, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let (Some(id), Some(nonce), Some(body)) = (
            sealed.get(..KEY_ID_LEN),
            sealed.get(KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN),
            sealed.get(KEY_ID_LEN + NONCE_LEN..),
        ) else {
            return Err(SealError::Short);
        };
        if body.len() < TAG_LEN {
            return Err(SealError::Short);
        }
        let key = self
            .keys()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(show_id(id)))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Short)?;
        let mut body = body.to_vec();
        let plain_len = key
            .key
            .open_in_place(nonce, Aad::from(ts_ms.to_le_bytes()), &mut body)
            .map_err(|_| SealError::Tampered(show_id(id)))?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &show_id(&self.current.id))
            .field(
                "old",
                &self.old.iter().map(|k| show_id(&k.id)).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Keyrings are equal when they hold the same keys (by id).
impl PartialEq for Keyring {
    fn eq(&self, other: &Self) -> bool {
        self.keys().map(|k| k.id).eq(other.keys().map(|k| k.id))
    }
}
impl Eq for Keyring {}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f";

    #[test]
    fn sealed_payloads_open_with_the_key_and_time_they_were_sealed_with() {
        let ring = Keyring::from_hex(A, &[]).unwrap();
        let plain = br#"{"Inference":{"id":"x","prompt":"secret"}}"#;
        let sealed = ring.seal(7, plain).unwrap();
        assert_eq!(sealed.len(), plain.len() + SEALED_OVERHEAD);
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "the plain text shows"
        );
        assert_eq!(ring.open(7, &sealed).unwrap(), plain);
        // Another time, a flipped bit, a cut payload: refused.
        assert!(matches!(ring.open(8, &sealed), Err(SealError::Tampered(_))));
        let mut flipped = sealed.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert!(matches!(
            ring.open(7, &flipped),
            Err(SealError::Tampered(_))
        ));
        assert_eq!(ring.open(7, &sealed[..20]), Err(SealError::Short));
        // Two seals of the same text differ (fresh nonce).
        assert_ne!(ring.seal(7, plain).unwrap(), sealed);
    }

    #[test]
    fn a_rotated_keyring_opens_old_payloads_and_seals_with_the_new_key() {
        let old = Keyring::from_hex(A, &[]).unwrap();
        let sealed_old = old.seal(1, b"before").unwrap();
        let rotated = Keyring::from_hex(B, &[A.to_owned()]).unwrap();
        assert_eq!(rotated.open(1, &sealed_old).unwrap(), b"before");
        let sealed_new = rotated.seal(2, b"after").unwrap();
        assert_eq!(
            Keyring::payload_key_id(&sealed_new),
            Some(rotated.current_id())
        );
        // The old keyring alone cannot open what the new key sealed.
        assert_eq!(
            old.open(2, &sealed_new),
            Err(SealError::UnknownKey(rotated.current_id()))
        );
        assert!(rotated.knows(&sealed_old) && rotated.knows(&sealed_new));
        assert!(!old.knows(&sealed_new));
    }

    #[test]
    fn keys_must_be_64_hex_digits() {
        for bad in ["", "00", &A[..63], &format!("{}zz", &A[..62])] {
            assert!(
                matches!(Keyring::from_hex(bad, &[]), Err(SealError::BadKey(_))),
                "{bad:?} accepted"
            );
        }
        // Surrounding whitespace (a trailing newline in a key file) is fine.
        assert!(Keyring::from_hex(&format!("{A}\n"), &[]).is_ok());
        assert!(Keyring::from_hex(A, &["nope".into()]).is_err());
    }

    #[test]
    fn nonces_do_not_repeat_when_the_counter_wraps() {
        let ring = Keyring::from_hex(A, &[]).unwrap();
        let first = ring.nonce().unwrap();
        ring.nonces.lock().unwrap().next = u32::MAX;
        let after_wrap = ring.nonce().unwrap();
        assert_ne!(first[..8], after_wrap[..8], "a new prefix is drawn");
        assert_eq!(after_wrap[8..], [0, 0, 0, 0]);
    }
}
