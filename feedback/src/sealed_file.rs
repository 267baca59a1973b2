//! Files encrypted at rest: the datasets Flywheel exports hold whole
//! prompts and answers from captured traffic (the tuner's `dataset`, the
//! tuner service's run snapshots), so with a key they are written sealed.
//!
//! A sealed file is [`MAGIC`], then the file's bytes sealed as one payload
//! by the log's [`Keyring`] (AES-256-GCM, `key id | nonce | ciphertext |
//! tag`, see [`crate::wal::seal`]) with [`FILE_CONTEXT`] as associated
//! data, so that a log frame's payload cannot pass for a file or the
//! reverse. The key id in the clear lets a reader name the key it lacks.
//!
//! Readers take plain and sealed files alike (a sealed one needs a key that
//! opens it; a plain one needs none), so turning encryption on does not
//! strand the files written before. Writes go to a temporary file that is
//! renamed into place: a reader never sees half a file.
//!
//! **Keys** are the log's: 64 hex digits in a file (`openssl rand -hex 32`).
//! The first key seals; every key given opens. **Rotation**: give the new
//! key first and the old one after it, and rewrite what should move to the
//! new key (`flywheel-tuner clean --in OLD --out NEW` reads with either and
//! writes with the first); drop the old key when no file needs it.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use crate::wal::{Keyring, SealError};

/// The first bytes of a sealed file: a line a person reading it with
/// `head` understands.
pub const MAGIC: &[u8] = b"FLYWHEEL-SEALED-1\n";

/// The associated data of a sealed file's payload (a log frame's is its
/// time): the bytes of "FW-FILE1".
pub const FILE_CONTEXT: u64 = u64::from_le_bytes(*b"FW-FILE1");

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SealedFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is encrypted (key {key}): give the key file that sealed it (--encryption-key-file)", path.display())]
    NeedsKey { path: PathBuf, key: String },
    #[error("{}: {source}", path.display())]
    Seal { path: PathBuf, source: SealError },
    #[error("{0}")]
    Key(String),
}

/// The keyring of key files, the first sealing and all opening; `None`
/// when no file is given.
pub fn keyring_from_files(files: &[PathBuf]) -> Result<Option<Keyring>, SealedFileError> {
    let Some((current, old)) = files.split_first() else {
        return Ok(None);
    };
    let read = |f: &PathBuf| crate::config::read_key_file(f).map_err(SealedFileError::Key);
    let old = old.iter().map(read).collect::<Result<Vec<_>, _>>()?;
    Keyring::from_hex(&read(current)?, &old)
        .map(Some)
        .map_err(|e| SealedFileError::Key(e.to_string()))
}

/// Whether `bytes` are a sealed file.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// `plain` as a sealed file's bytes.
pub fn seal(keys: &Keyring, plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let sealed = keys.seal(FILE_CONTEXT, plain)?;
    let mut out = Vec::with_capacity(MAGIC.len() + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The plain bytes of a file's contents: sealed ones opened with `keys`,
/// plain ones as they are.
pub fn open(
    path: &Path,
    bytes: Vec<u8>,
    keys: Option<&Keyring>,
) -> Result<Vec<u8>, SealedFileError> {
    let Some(sealed) = bytes.strip_prefix(MAGIC) else {
        return Ok(bytes);
    };
    let Some(keys) = keys else {
        return Err(SealedFileError::NeedsKey {
            path: path.to_owned(),
            key: Keyring::payload_key_id(sealed).unwrap_or_else(|| "unknown".into()),
        });
    };
    keys.open(FILE_CONTEXT, sealed)
        .map_err(|source| SealedFileError::Seal {
            path: path.to_owned(),
            source,
        })
}

/// Reads a file, plain or sealed.
pub fn read(path: &Path, keys: Option<&Keyring>) -> Result<Vec<u8>, SealedFileError> {
    let bytes = std::fs::read(path).map_err(|source| SealedFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    open(path, bytes, keys)
}

/// Writes `plain` to `path`, sealed when `keys` is given, through a
/// temporary file renamed into place.
pub fn write(path: &Path, plain: &[u8], keys: Option<&Keyring>) -> Result<(), SealedFileError> {
    let io = |source| SealedFileError::Io {
        path: path.to_owned(),
        source,
    };
    let sealed;
    let bytes = match keys {
        Some(keys) => {
            sealed = seal(keys, plain).map_err(|source| SealedFileError::Seal {
                path: path.to_owned(),
                source,
            })?;
            &sealed[..]
        }
        None => plain,
    };
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const KEY_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn keys(current: &str, old: &[&str]) -> Keyring {
        let old: Vec<String> = old.iter().map(|k| (*k).to_owned()).collect();
        Keyring::from_hex(current, &old).unwrap()
    }

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_sealed_file_holds_no_plain_text_and_opens_with_its_key() {
        let d = dir();
        let path = d.path().join("train.jsonl");
        let plain = b"{\"messages\":[{\"role\":\"user\",\"content\":\"my card is 4111\"}]}\n";
        write(&path, plain, Some(&keys(KEY_A, &[]))).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert!(is_sealed(&on_disk));
        assert!(
            !on_disk.windows(4).any(|w| w == b"4111"),
            "plain text on disk"
        );
        assert_eq!(read(&path, Some(&keys(KEY_A, &[]))).unwrap(), plain);
        assert!(!d.path().join("train.jsonl.tmp").exists());
    }

    #[test]
    fn without_its_key_a_sealed_file_is_refused_by_name_and_key_id() {
        let d = dir();
        let path = d.path().join("heldout.jsonl");
        let a = keys(KEY_A, &[]);
        write(&path, b"secret\n", Some(&a)).unwrap();
        let none = read(&path, None).unwrap_err();
        assert!(matches!(none, SealedFileError::NeedsKey { .. }), "{none}");
        assert!(none.to_string().contains(&a.current_id()), "{none}");
        let other = read(&path, Some(&keys(KEY_B, &[]))).unwrap_err();
        assert!(
            matches!(
                other,
                SealedFileError::Seal {
                    source: SealError::UnknownKey(_),
                    ..
                }
            ),
            "{other}"
        );
    }

    #[test]
    fn plain_files_still_read_and_a_rotated_ring_opens_the_old_key_s_files() {
        let d = dir();
        let plain = d.path().join("plain.jsonl");
        write(&plain, b"{}\n", None).unwrap();
        assert_eq!(read(&plain, Some(&keys(KEY_A, &[]))).unwrap(), b"{}\n");
        let old = d.path().join("old.jsonl");
        write(&old, b"old\n", Some(&keys(KEY_A, &[]))).unwrap();
        // B is current now, A only opens.
        let rotated = keys(KEY_B, &[KEY_A]);
        assert_eq!(read(&old, Some(&rotated)).unwrap(), b"old\n");
        let new = d.path().join("new.jsonl");
        write(&new, b"new\n", Some(&rotated)).unwrap();
        assert!(
            read(&new, Some(&keys(KEY_A, &[]))).is_err(),
            "sealed with the old key"
        );
    }

    #[test]
    fn a_changed_byte_or_a_log_frame_s_payload_does_not_open() {
        let a = keys(KEY_A, &[]);
        let mut bytes = seal(&a, b"answer").unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = open(Path::new("f"), bytes, Some(&a)).unwrap_err();
        assert!(
            matches!(
                tampered,
                SealedFileError::Seal {
                    source: SealError::Tampered(_),
                    ..
                }
            ),
            "{tampered}"
        );
        // A log frame's payload, sealed with its time as associated data.
        let mut frame = MAGIC.to_vec();
        frame.extend_from_slice(&a.seal(1_700_000_000_000, b"answer").unwrap());
        assert!(open(Path::new("f"), frame, Some(&a)).is_err());
    }
}
